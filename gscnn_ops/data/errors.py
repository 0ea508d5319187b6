"""The one exception type of :mod:`gscnn_ops.data` for bad data on disk.

It is a :class:`ValueError` so that callers who already catch "bad value" errors keep working,
while a data-loading script can catch exactly the problems of the files themselves (corrupt or
undecodable images, masks holding colours or out-of-range values, images without masks...)
and report them apart from programming errors. Missing paths raise :class:`FileNotFoundError`
instead, as everywhere else in Python.
"""


class DataError(ValueError):
    """A file of a dataset cannot be used as it is; the message names the file and the problem.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import DataError, labelids_to_trainids
        >>> try:
        ...     labelids_to_trainids(torch.tensor([[40]]))
        ... except DataError as e:
        ...     print("outside the Cityscapes labelIds" in str(e))
        True
    """
