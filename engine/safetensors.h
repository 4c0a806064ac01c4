// engine/safetensors.h — the safetensors file format (Hugging Face): F32 and I32 tensors, and
// F16 / BF16 weights read tensor by tensor into floats (SafeTensorsFile).
//
// Layout (huggingface/safetensors README):
//   bytes 0..8      N, unsigned 64-bit little-endian: the size of the JSON header
//   bytes 8..8+N    the header, UTF-8 JSON, starting with '{' and padded with spaces:
//                   {"__metadata__": {"format": "pt"},
//                    "NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...}
//   bytes 8+N..     the data buffer; BEGIN/END are byte offsets into it (END one past the end),
//                   each tensor little-endian, row-major, packed.
//
// The reader treats every file as untrusted and checks, before copying any data:
//   - 8 ≤ file size; N ≤ 100,000,000; 8 + N ≤ file size (checked add, N read before the header)
//   - the header is UTF-8 and JSON whose root is an object; no key appears twice in any object
//     (JSON libraries silently keep the last duplicate: we say "duplicate key 'x'" instead)
//   - each tensor is an object with exactly dtype, shape and data_offsets — any other field is
//     rejected, as in the format's JSON schema (additionalProperties: false)
//   - dtype is F32 or I32 (other safetensors dtypes are "unsupported", anything else "unknown")
//   - shape entries are integers in [0, 2^53], at most 4 of them (the engine's Shape limit);
//     numel × 4 is computed with overflow checks
//   - the tensors, sorted by offsets, tile the data buffer exactly: the first starts at 0, each
//     starts where the previous ended (no hole, no overlap, so no file can make us allocate more
//     than its own size) and the last ends at the end of the file (no trailing polyglot bytes)
//   - END − BEGIN == numel × 4
//   - __metadata__, if present, is an object of strings.
// Every failure is a FileError naming the file and, where there is one, the tensor.
// Zero-size tensors ([2, 0]) and scalars (shape []) are legal. Data is copied with memcpy, so
// offsets that are not 4-aligned (other writers) are fine.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>
#include "tensor.h"

struct SafeTensors {
    std::map<std::string, Tensor> tensors;
    std::vector<std::string> order;                 // tensor names in file (offset) order
    std::map<std::string, std::string> metadata;    // the __metadata__ map, e.g. {"format": "pt"}
    std::string source;                             // the file name, for error messages

    // The tensor called `name`; FileError "<file>: no tensor 'name'" if there is none.
    const Tensor& at(const std::string& name) const;
};

// Writes through atomic_write_file, the reference writer's layout: tensors sorted by dtype
// alignment (descending), then by name; the header padded with spaces to a multiple of 8.
// Throws ValueError for an undefined tensor, a repeated name, the reserved name "__metadata__"
// or a string that is not UTF-8; FileError if the header would exceed 100,000,000 bytes or the
// write fails (the old file then stays intact).
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

SafeTensors load_safetensors(const std::string& path);

// The whole file's bytes -> tensors: the core of load_safetensors, and what a fuzzer drives.
SafeTensors parse_safetensors(const std::string& bytes, const std::string& name_for_errors);

// ---- large files, one tensor at a time
//
// A model file is read without a second copy of the weights in memory: SafeTensorsFile reads
// and checks only the header when opened (every rule above; dtypes F32, I32, F16, BF16 and U8), and
// then one tensor (or a block of its rows) at a time into a float buffer the caller owns.
// F16 and BF16 widen to float exactly (every 16-bit value is a float).
struct TensorInfo {
    std::string name, dtype;   // "F32", "F16", "BF16" (read as floats), "U8" (quantised blocks, engine/quant.h) or "I32"
    Shape shape;
    uint64_t begin, end;       // byte offsets into the data buffer
};

class SafeTensorsFile {
public:
    explicit SafeTensorsFile(const std::string& path);   // FileError naming the file and the fault
    ~SafeTensorsFile();
    SafeTensorsFile(const SafeTensorsFile&) = delete;
    SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;

    const std::string& path() const { return path_; }
    const std::vector<TensorInfo>& tensors() const { return tensors_; }   // in file order
    const TensorInfo* find(const std::string& name) const;                 // nullptr if absent
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    // The tensor's numel values as float into dst.
    void read_f32(const TensorInfo& t, float* dst) const;
    // Rows row0 .. row0+rows-1 of its first dimension (rows × the other dims' size values).
    void read_f32_rows(const TensorInfo& t, int64_t row0, int64_t rows, float* dst) const;
    // A U8 tensor's bytes into dst (end − begin of them); FileError for any other dtype.
    void read_bytes(const TensorInfo& t, void* dst) const;

private:
    void read_at(uint64_t offset, void* dst, uint64_t n) const;
    std::string path_;
    int fd_ = -1;
    uint64_t data_start_ = 0;
    std::vector<TensorInfo> tensors_;
    std::map<std::string, std::string> metadata_;
};

// Writes tensors known by name and shape, F32 or U8, each produced by fill(i, dst) (numel floats
// or bytes) just before it is written: a model is written from another layout, or from quantised
// blocks, without a second copy. Same header and layout as save_safetensors; atomic.
struct StreamedTensor {
    std::string name;
    Shape shape;
    bool u8 = false;   // U8 (bytes), else F32
};
void save_safetensors_streamed(const std::string& path, const std::vector<StreamedTensor>& tensors,
                               const std::function<void(size_t, void*)>& fill,
                               const std::map<std::string, std::string>& metadata = {});
