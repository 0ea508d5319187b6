# Finds torch (find_package(Torch)) with the CUDA toolkit hints that a CUDA build of torch needs even
# for CPU-only consumers; included by CMakeLists.txt and examples/cpp/CMakeLists.txt.
# Set CMAKE_CUDA_COMPILER / CUDA_HOME / CMAKE_CUDA_ARCHITECTURES before including it.

# --- CUDA toolkit hints, before find_package(Torch) (which runs FindCUDA + enable_language(CUDA))
if(NOT DEFINED CMAKE_CUDA_COMPILER)
  if(DEFINED ENV{CUDA_HOME} AND EXISTS "$ENV{CUDA_HOME}/bin/nvcc")
    set(CMAKE_CUDA_COMPILER "$ENV{CUDA_HOME}/bin/nvcc")
  else()
    find_program(_nvcc nvcc)
    if(_nvcc)  # see through a one-line `exec /path/to/real/nvcc "$@"` wrapper script
      file(STRINGS "${_nvcc}" _exec REGEX "^exec .*/bin/nvcc")
      string(REGEX MATCH "[^ ]*/bin/nvcc" _real "${_exec}")
      if(_real AND EXISTS "${_real}")
        set(CMAKE_CUDA_COMPILER "${_real}")
      endif()
    endif()
  endif()
endif()
if(CMAKE_CUDA_COMPILER AND NOT CUDA_TOOLKIT_ROOT_DIR)
  get_filename_component(_bin "${CMAKE_CUDA_COMPILER}" REALPATH)
  get_filename_component(_bin "${_bin}" DIRECTORY)
  get_filename_component(CUDA_TOOLKIT_ROOT_DIR "${_bin}" DIRECTORY)  # read by torch's FindCUDA
  set(CUDAToolkit_ROOT "${CUDA_TOOLKIT_ROOT_DIR}")
endif()
# torch's CMake config wants libnvrtc; a toolkit without it (ours) can use the one in the
# nvidia-*-cu13 pip package that torch depends on (site-packages/nvidia/cu13/lib).
if(NOT CUDA_nvrtc_LIBRARY AND "${CMAKE_PREFIX_PATH};${Torch_DIR}" MATCHES "([^;]*)/torch/share/cmake")
  find_library(CUDA_nvrtc_LIBRARY NAMES nvrtc libnvrtc.so.13 libnvrtc.so.12
               PATHS "${CMAKE_MATCH_1}/nvidia/cu13/lib" "${CMAKE_MATCH_1}/nvidia/cuda_nvrtc/lib"
               NO_DEFAULT_PATH)
endif()

# Architectures: CMAKE_CUDA_ARCHITECTURES (numbers; default 90: Hopper, H100/H200). torch's
# config ignores it (it warns, resets it to OFF and adds -gencode flags from TORCH_CUDA_ARCH_LIST,
# which without a GPU it would guess), so translate: 90 -> 9.0, 90a -> 9.0a, 80;90 -> 8.0;9.0.
# A TORCH_CUDA_ARCH_LIST given by -D or the environment wins. Each arch adds a full nvcc pass.
if(NOT CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90)
endif()
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  string(REGEX REPLACE "([0-9]+)([0-9])([af]?)(-real|-virtual)?" "\\1.\\2\\3"
         TORCH_CUDA_ARCH_LIST "${CMAKE_CUDA_ARCHITECTURES}")
endif()

find_package(Torch REQUIRED)
