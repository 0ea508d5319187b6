#pragma once
// The GPU emulator of the tests: runs the library's block programs (common/exec.h) on the CPU
// exactly as the CUDA kernel does -- the same program, the same launch (chosen by the op's own
// launch selection for a GPU from the tests' table, or forced) -- block by block, and within a
// block every thread in turn, one barrier interval after the other.
//
// Shared memory (and a launch's global scratch memory, which plays the same role) is filled with
// 0xFF bytes at the start of every block (NaN in float, -1 in integers), and every access to it
// goes through TrackedPtr, which reports to a SharedMemoryTracker:
//   * a thread reading or writing a word that another thread wrote in the same barrier interval,
//     or writing a word that another thread read in it: a race on the GPU (no barrier orders the
//     two accesses). The emulator's sequential order would hide it; the tracker does not.
//   * a read of a word that no thread wrote since the block started (uninitialised memory).
//   * an access outside the block's buffer.
// Each is raised as an error naming the op, the block, the interval, the threads and the offset.
// EmuOptions::skip_barrier removes one barrier (the k-th sync() of every block) so that a test
// can show that the tracker catches a missing barrier.

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <typeinfo>
#include <vector>

#include "../common/launch.h"

namespace gscnn {
namespace testing {

struct EmuOptions {
  bool track = true;          // record accesses and fail on races / uninitialised reads
  int64_t skip_barrier = -1;  // >= 0: the k-th sync() of each block is not a barrier
};

// What a launch did to its blocks' shared memory, summed over every block and thread: element
// accesses (one per shared load or store instruction a thread executes) and their bytes, the
// barriers met, and the wavefronts the accesses take on the GPU (WarpAccesses).
// scripts/kernel_report.py turns them into load/store-pipe time estimates.
struct SharedCounts {
  int64_t loads = 0, stores = 0, load_bytes = 0, store_bytes = 0, barriers = 0;
  int64_t load_wavefronts = 0, store_wavefronts = 0;
  // What the same accesses would take free of bank conflicts: per phase, its distinct words over
  // 32 (rounded up), one for a broadcast (so wavefronts - conflict_free_wavefronts = the conflicts)
  int64_t conflict_free_wavefronts = 0;
  // The same per pass site (a for_each_thread call of the program: one phase), in the order the
  // sites first ran. site: the ordinal of the pass's lambda among the lambdas of the same
  // signature in its enclosing function, in source order from 1 (from its mangled name, "...E_"
  // for the first, "...E<n>_" for the n + 2-th; 0 where the name has no such ending). Passes in
  // different functions (a program's helpers) can share an ordinal and are then added together;
  // the dual-task program's passes all lie in its operator().
  struct Pass {
    int64_t site = 0, wavefronts = 0, conflict_free_wavefronts = 0;
  };
  std::vector<Pass> passes;
  void add_pass(int64_t site, int64_t wavefronts, int64_t conflict_free) {
    auto it = std::find_if(passes.begin(), passes.end(),
                           [site](const Pass& p) { return p.site == site; });
    if (it == passes.end()) it = passes.insert(passes.end(), Pass{site, 0, 0});
    it->wavefronts += wavefronts;
    it->conflict_free_wavefronts += conflict_free;
  }
  int64_t wavefronts() const { return load_wavefronts + store_wavefronts; }
};

// The ordinal of a lambda in its enclosing function from its type's mangled name (Itanium ABI:
// a closure type ends "E_" for the first lambda of a signature, "E<n>_" for the n + 2-th), 0 if
// the name is not a closure's. The programs' passes take one lambda each.
inline int64_t lambda_ordinal(const char* mangled) {
  const std::string n(mangled);
  if (n.size() < 2 || n.back() != '_') return 0;
  size_t i = n.size() - 1;
  while (i > 0 && n[i - 1] >= '0' && n[i - 1] <= '9') --i;
  if (i == 0 || n[i - 1] != 'E') return 0;
  return i == n.size() - 1 ? 1 : std::stoll(n.substr(i, n.size() - 1 - i)) + 2;
}

// The shared-memory wavefronts of a block's warps: the k-th access of each thread of a warp in one
// for_each_thread pass is taken as one warp instruction (the programs' threads run the same code;
// where they diverge, accesses of another kind or size at the same position count as another
// instruction). An instruction's lanes are served in phases -- the whole warp for accesses of up
// to 4 bytes, half-warps for 8 bytes, quarter-warps for 16 -- and a phase takes as many wavefronts
// as the most distinct 32-bit words any one of the 32 banks holds among its addresses (lanes
// reading the same word share it: a broadcast); an instruction whose lanes all use one address
// takes one. So 32 lanes storing consecutive floats take 1, 32 lanes reading 16 consecutive bytes
// each take 4, and 32 lanes 16 words apart take 16 (two banks, 16 words each). Lanes that took
// different branches to accesses of the same kind and size at the same position are merged into
// one instruction (the programs' divergent branches are rare and short: an approximation).
class WarpAccesses {
 public:
  void begin(int64_t threads) {
    log_.assign(static_cast<size_t>(threads), {});
    active_ = true;
  }
  bool active() const { return active_; }
  // An access of more than 16 bytes (four doubles) is several 16-byte accesses on the GPU
  // (common/vector_access.h).
  void add(int32_t thread, uint32_t offset, uint32_t size, bool store) {
    auto& log = log_[static_cast<size_t>(thread)];
    for (uint32_t at = 0; at < size; at += 16)
      log.push_back({offset + at, size - at < 16 ? size - at : 16, store});
  }
  // Ends the pass: adds its wavefronts to counts.
  void end(SharedCounts& counts) {
    active_ = false;
    const size_t T = log_.size();
    for (size_t w0 = 0; w0 < T; w0 += 32) {
      const size_t w1 = w0 + 32 < T ? w0 + 32 : T;
      size_t longest = 0;
      for (size_t t = w0; t < w1; ++t) longest = std::max(longest, log_[t].size());
      for (size_t k = 0; k < longest; ++k) {
        // the lanes' k-th accesses, one instruction per (kind, size) among them
        bool done[32] = {};
        for (size_t first = w0; first < w1; ++first) {
          if (k >= log_[first].size() || done[first - w0]) continue;
          const Access a = log_[first][k];
          lanes_.clear();
          for (size_t t = first; t < w1; ++t) {
            if (k >= log_[t].size() || done[t - w0]) continue;
            const Access b = log_[t][k];
            if (b.store != a.store || b.size != a.size) continue;
            done[t - w0] = true;
            lanes_.push_back({static_cast<uint32_t>(t - w0), b.offset});
          }
          const Wavefronts w = wavefronts(a.size);
          (a.store ? counts.store_wavefronts : counts.load_wavefronts) += w.taken;
          counts.conflict_free_wavefronts += w.conflict_free;
        }
      }
    }
    log_.clear();
  }

 private:
  struct Access {
    uint32_t offset, size;
    bool store;
  };
  struct Lane {
    uint32_t lane, offset;
  };
  struct Wavefronts {
    int64_t taken, conflict_free;
  };
  Wavefronts wavefronts(uint32_t size) const {
    bool uniform = true;
    for (const Lane& l : lanes_) uniform = uniform && l.offset == lanes_[0].offset;
    if (uniform) return {1, 1};
    const uint32_t per_phase = size <= 4 ? 32 : size <= 8 ? 16 : 8;  // size <= 16 (add())
    int64_t total = 0, ideal = 0;
    for (uint32_t phase = 0; phase < 32 / per_phase; ++phase) {
      uint32_t words[32 * 5];  // at most 8 lanes x 5 words (16 bytes, unaligned) or 32 x 2
      int n = 0;
      for (const Lane& l : lanes_) {
        if (l.lane / per_phase != phase) continue;
        for (uint32_t w = l.offset / 4; w <= (l.offset + size - 1) / 4; ++w) words[n++] = w;
      }
      if (n == 0) continue;
      int most = 0, all = 0;
      for (int bank = 0; bank < 32; ++bank) {
        int distinct = 0;
        for (int i = 0; i < n; ++i) {
          if (words[i] % 32 != static_cast<uint32_t>(bank)) continue;
          bool seen = false;
          for (int j = 0; j < i && !seen; ++j) seen = words[j] == words[i];
          distinct += seen ? 0 : 1;
        }
        most = distinct > most ? distinct : most;
        all += distinct;
      }
      total += most;
      ideal += (all + 31) / 32;
    }
    return {total, ideal};
  }
  std::vector<std::vector<Access>> log_;
  std::vector<Lane> lanes_;
  bool active_ = false;
};

class SharedMemoryTracker {
 public:
  explicit SharedMemoryTracker(const char* op) : op_(op) {}
  SharedCounts counts;  // counted whether or not accesses are tracked
  WarpAccesses warps;   // the current for_each_thread pass's accesses, for the wavefronts

  void new_block(int64_t block, size_t bytes, bool track) {
    block_ = block;
    bytes_ = bytes;
    track_ = track;
    interval_ = 1;
    words_.assign(track ? (bytes + 3) / 4 : 0, Word{});
  }
  void barrier() {
    ++interval_;
    ++counts.barriers;
  }
  void set_thread(int64_t t) { thread_ = static_cast<int32_t>(t); }
  int64_t interval() const { return interval_; }

  void read(size_t offset, size_t size) {
    check_bounds(offset, size, "reads");
    ++counts.loads;
    counts.load_bytes += static_cast<int64_t>(size);
    count_wavefronts(offset, size, false);
    if (!track_) return;
    for (size_t w = offset / 4; w < (offset + size + 3) / 4; ++w) {
      Word& x = words_[w];
      if (!x.written) fail("reads", offset, "that no thread of the block has written (uninitialised shared memory)", -1);
      if (x.w_interval == interval_ && x.writer != thread_)
        fail("reads", offset, "that another thread wrote in the same barrier interval", x.writer);
      if (x.r_interval != interval_) {
        x.r_interval = interval_;
        x.reader = thread_;
      } else if (x.reader != thread_) {
        x.reader = kManyReaders;
      }
    }
  }

  void write(size_t offset, size_t size) {
    check_bounds(offset, size, "writes");
    ++counts.stores;
    counts.store_bytes += static_cast<int64_t>(size);
    count_wavefronts(offset, size, true);
    if (!track_) return;
    for (size_t w = offset / 4; w < (offset + size + 3) / 4; ++w) {
      Word& x = words_[w];
      if (x.w_interval == interval_ && x.writer != thread_)
        fail("writes", offset, "that another thread wrote in the same barrier interval", x.writer);
      if (x.r_interval == interval_ && x.reader != thread_)
        fail("writes", offset, "that another thread read in the same barrier interval",
             x.reader == kManyReaders ? -1 : x.reader);
      x.w_interval = interval_;
      x.writer = thread_;
      x.written = true;
    }
  }

 private:
  static constexpr int32_t kManyReaders = -2;
  struct Word {
    int64_t w_interval = 0, r_interval = 0;
    int32_t writer = -1, reader = -1;
    bool written = false;
  };

  // Inside a for_each_thread pass: logged per thread (WarpAccesses); elsewhere (one thread's
  // work, e.g. a reduction's last step) one wavefront each.
  void count_wavefronts(size_t offset, size_t size, bool store) {
    if (warps.active()) {
      warps.add(thread_, static_cast<uint32_t>(offset), static_cast<uint32_t>(size), store);
    } else {
      ++(store ? counts.store_wavefronts : counts.load_wavefronts);
      ++counts.conflict_free_wavefronts;
    }
  }
  void check_bounds(size_t offset, size_t size, const char* what) const {
    TORCH_CHECK(offset + size <= bytes_, op_, ": emulated block ", block_, ": thread ", thread_,
                " ", what, " bytes [", offset, ", ", offset + size,
                ") outside its shared memory of ", bytes_, " bytes");
  }
  [[noreturn]] void fail(const char* what, size_t offset, const char* why, int32_t other) const {
    const bool race = std::strstr(why, "uninitialised") == nullptr;
    TORCH_CHECK(false, op_, ": ", race ? "shared-memory race" : "uninitialised shared memory",
                " in emulated block ", block_, ", barrier interval ", interval_, ": thread ",
                thread_, " ", what, " byte offset ", offset, " ", why,
                other >= 0 ? " (thread " + std::to_string(other) + ")" : std::string(),
                race ? "; a barrier (ex.sync()) is missing between the two accesses" : "");
  }

  const char* op_;
  int64_t block_ = 0, interval_ = 1;
  size_t bytes_ = 0;
  bool track_ = true;
  int32_t thread_ = 0;
  std::vector<Word> words_;
};

// A reference to one element of the block's memory that reports reads and writes.
template <typename T>
class TrackedRef {
 public:
  TrackedRef(T* p, unsigned char* base, SharedMemoryTracker* tr) : p_(p), base_(base), tr_(tr) {}
  operator T() const {
    tr_->read(offset(), sizeof(T));
    return *p_;
  }
  const TrackedRef& operator=(T v) const {
    tr_->write(offset(), sizeof(T));
    *p_ = v;
    return *this;
  }
  const TrackedRef& operator=(const TrackedRef& o) const { return *this = static_cast<T>(o); }
  const TrackedRef& operator+=(T v) const { return *this = static_cast<T>(*this) + v; }
  const TrackedRef& operator-=(T v) const { return *this = static_cast<T>(*this) - v; }

 private:
  size_t offset() const { return reinterpret_cast<unsigned char*>(p_) - base_; }
  T* p_;
  unsigned char* base_;
  SharedMemoryTracker* tr_;
};

// A pointer into the block's memory whose element accesses go through TrackedRef.
template <typename T>
class TrackedPtr {
 public:
  TrackedPtr(T* p, unsigned char* base, SharedMemoryTracker* tr) : p_(p), base_(base), tr_(tr) {}
  TrackedRef<T> operator[](int64_t i) const { return TrackedRef<T>(p_ + i, base_, tr_); }
  TrackedRef<T> operator*() const { return (*this)[0]; }
  TrackedPtr operator+(int64_t i) const { return TrackedPtr(p_ + i, base_, tr_); }
  TrackedPtr operator-(int64_t i) const { return TrackedPtr(p_ - i, base_, tr_); }
  TrackedPtr& operator+=(int64_t i) {
    p_ += i;
    return *this;
  }
  // N consecutive elements as one access of N * sizeof(T) bytes, as the GPU's vector loads and
  // stores make (common/vector_access.h): counted and checked as one instruction.
  template <int N>
  void read_vector(T (&v)[N]) const {
    check_aligned(N * sizeof(T));
    tr_->read(offset(), N * sizeof(T));
    std::memcpy(v, p_, sizeof v);
  }
  template <int N>
  void write_vector(const T (&v)[N]) const {
    check_aligned(N * sizeof(T));
    tr_->write(offset(), N * sizeof(T));
    std::memcpy(p_, v, sizeof v);
  }

 private:
  size_t offset() const { return reinterpret_cast<unsigned char*>(p_) - base_; }
  // The GPU faults on a vector access that is not aligned to its size (the block's memory starts
  // 16-byte aligned there; offsets are what the program controls).
  void check_aligned(size_t bytes) const {
    TORCH_CHECK(offset() % bytes == 0, "emulated block: a vector access of ", bytes,
                " bytes at byte offset ", offset(), " of the block's memory is misaligned");
  }
  T* p_;
  unsigned char* base_;
  SharedMemoryTracker* tr_;
};

// The overloads of common/vector_access.h for the recording pointer (found by argument-dependent
// lookup from the block programs).
template <int N, typename T>
void load_vector(const TrackedPtr<T>& p, T (&v)[N]) {
  p.read_vector(v);
}
template <int N, typename T>
void store_vector(const TrackedPtr<T>& p, const T (&v)[N]) {
  p.write_vector(v);
}

// The execution policy of the emulator (the interface of common/exec.h).
class EmuExec {
 public:
  EmuExec(int64_t block, int64_t grid, int64_t threads, unsigned char* memory,
          SharedMemoryTracker* tracker, const EmuOptions& opt)
      : block_(block), grid_(grid), threads_(threads), memory_(memory), tracker_(tracker),
        opt_(opt) {}

  int64_t block() const { return block_; }
  int64_t grid() const { return grid_; }
  int64_t threads() const { return threads_; }

  template <typename F>
  void for_each_thread(F&& f) {
    tracker_->warps.begin(threads_);
    for (int64_t t = 0; t < threads_; ++t) {
      tracker_->set_thread(t);
      f(t);
    }
    SharedCounts& c = tracker_->counts;
    const int64_t wavefronts = c.wavefronts(), conflict_free = c.conflict_free_wavefronts;
    tracker_->warps.end(c);
    static const int64_t site = lambda_ordinal(typeid(F).name());  // one per instantiation
    c.add_pass(site, c.wavefronts() - wavefronts, c.conflict_free_wavefronts - conflict_free);
  }
  void sync() {
    if (syncs_++ != opt_.skip_barrier) tracker_->barrier();
  }
  // A barrier that also tells every thread whether pred(t) held for any thread t. Removed (a
  // test's skip_barrier), the vote is still taken, so that the race detector can say whether the
  // barrier also orders data; the GPU has no vote without it (vote_removed: emulate reports it).
  template <typename F>
  bool sync_any(F&& pred) {
    bool any = false;
    for (int64_t t = 0; t < threads_; ++t) any |= static_cast<bool>(pred(t));
    vote_removed_ = vote_removed_ || syncs_ == opt_.skip_barrier;
    sync();
    return any;
  }
  int64_t barriers_seen() const { return syncs_; }
  bool vote_removed() const { return vote_removed_; }

  template <typename T>
  TrackedPtr<T> shared() const {
    return TrackedPtr<T>(reinterpret_cast<T*>(memory_), memory_, tracker_);
  }

  template <typename S>
  struct Registers {
    std::vector<S> values;
    S& operator()(int64_t t) { return values[t]; }
  };
  // Per-thread state, poison-filled like the shared memory (registers start undefined too).
  template <typename S>
  Registers<S> registers() const {
    Registers<S> r{std::vector<S>(threads_)};
    std::memset(static_cast<void*>(r.values.data()), 0xFF, sizeof(S) * threads_);
    return r;
  }

 private:
  int64_t block_, grid_, threads_;
  unsigned char* memory_;
  SharedMemoryTracker* tracker_;
  const EmuOptions& opt_;
  int64_t syncs_ = 0;
  bool vote_removed_ = false;
};

// Runs `program` over the grid of `launch`. Shared memory (or the scratch slice, which the GPU
// allocates per block) is the launch's per-block buffer, poison-filled for every block. Returns
// the number of barriers block 0 met (for the tests that remove one); `counts`, if given, receives
// the launch's shared-memory accesses.
template <typename Program>
int64_t emulate(const char* op, const Program& program, const Launch& launch,
                const EmuOptions& opt, SharedCounts* counts = nullptr) {
  const size_t bytes = static_cast<size_t>(launch.uses_scratch() ? launch.scratch_bytes_per_block
                                                                 : launch.shared_bytes);
  std::vector<unsigned char> memory(bytes + 16);
  SharedMemoryTracker tracker(op);
  int64_t first_block_barriers = 0;
  for (int64_t b = 0; b < launch.blocks; ++b) {
    std::memset(memory.data(), 0xFF, memory.size());
    tracker.new_block(b, bytes, opt.track);
    EmuExec ex(b, launch.blocks, launch.threads, memory.data(), &tracker, opt);
    program(ex);
    if (b == 0) first_block_barriers = ex.barriers_seen();
    // No race without it, but the barrier was a vote's (sync_any): needed all the same.
    TORCH_CHECK(!ex.vote_removed(), op, ": barrier ", opt.skip_barrier,
                " removed without a shared-memory race: it is a vote's (sync_any), needed for "
                "the vote itself");
  }
  if (counts) *counts = tracker.counts;
  return first_block_barriers;
}

}  // namespace testing
}  // namespace gscnn
