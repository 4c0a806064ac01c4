// engine/fileio.h — reading whole files with a size limit, and crash-safe (atomic) file writing.
//
// atomic_write_file never leaves a half-written file under the final name: it writes a temp
// file in the same folder, then
//     write (every call checked) -> fflush -> fsync(file) -> fclose -> rename(temp, path) -> fsync(folder)
// A process killed at any point leaves either the old file or the new one. On any failure
// (ENOSPC, EFBIG, EIO, a throwing `fill` callback, ...) the temp file is removed, the old file
// is untouched, and a FileError naming the path and the system's reason is thrown.
// The new file gets default permissions (0666 & ~umask), not those of the file it replaces.
#pragma once
#include <cstddef>
#include <cstdio>
#include <functional>
#include <string>

// What atomic_write_file hands to its `fill` callback: every write is checked, so a callback
// cannot forget to look at an fwrite return value.
class FileWriter {
public:
    FileWriter(std::FILE* f, const std::string& path) : f_(f), path_(path) {}
    void write(const void* data, size_t n);   // throws FileError (e.g. "No space left on device")
    void write(const std::string& s) { write(s.data(), s.size()); }
    size_t bytes_written() const { return written_; }

private:
    std::FILE* f_;
    const std::string& path_;
    size_t written_ = 0;
};

void atomic_write_file(const std::string& path, const std::function<void(FileWriter&)>& fill);
void atomic_write_file(const std::string& path, const std::string& bytes);

// The whole file. Throws FileError naming the path if it is missing, unreadable, not a regular
// file after following links (a directory, FIFO, device or socket: refused before reading, so
// /dev/zero or a pipe can never hang the program), or longer than max_bytes (checked from its
// size before reading, and again while reading). Each kind of file has its own limit (e.g.
// kMaxDatasetBytes, 1 MiB for JSON configs).
std::string read_file(const std::string& path, size_t max_bytes);
// The same checks, for a file read in parts: its descriptor (the caller closes it) and size.
int open_regular_file(const std::string& path, uint64_t* size);

// `mkdir -p`: creates the folder and its missing parents; FileError naming the path otherwise.
void make_dirs(const std::string& path);
