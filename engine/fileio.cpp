// engine/fileio.cpp — read_file with a size limit; atomic_write_file (temp, fsync, rename, fsync folder).
#include "fileio.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <cstring>
#include "check.h"

static FileError sys_error(const std::string& path, const std::string& what, int err) {
    return FileError(fmt::format("{}: {}: {}", path, what, std::strerror(err)));
}

void FileWriter::write(const void* data, size_t n) {
    if (n == 0) return;
    if (std::fwrite(data, 1, n, f_) != n) throw sys_error(path_, fmt::format("write failed after {} bytes", written_), errno);
    written_ += n;
}

// "a/b/c.st" -> "a/b", "c.st" -> ".", "/c.st" -> "/"
static std::string folder_of(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

// Makes the rename itself durable: without this a power cut can bring back the old directory entry.
static void fsync_folder(const std::string& path) {
    const std::string dir = folder_of(path);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) throw sys_error(path, fmt::format("written, but cannot open folder '{}' to fsync it", dir), errno);
    const int rc = ::fsync(dfd), err = errno;
    ::close(dfd);
    // EINVAL: this file system cannot fsync a directory; the rename is as durable as it gets there.
    if (rc != 0 && err != EINVAL) throw sys_error(path, fmt::format("written, but fsync of folder '{}' failed", dir), err);
}

void atomic_write_file(const std::string& path, const std::function<void(FileWriter&)>& fill) {
    // A unique temp name in the same folder (rename is only atomic within one file system).
    // O_EXCL: never write into a file someone else (or a stale crashed run) owns.
    static std::atomic<uint64_t> counter{0};
    std::string tmp;
    int fd = -1;
    for (int attempt = 0; fd < 0; attempt++) {
        tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter++);
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && (errno != EEXIST || attempt == 100))
            throw sys_error(path, fmt::format("cannot create temp file '{}'", tmp), errno);
    }
    std::FILE* f = ::fdopen(fd, "wb");
    if (!f) {
        const int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        throw sys_error(path, "fdopen failed", err);
    }
    try {
        FileWriter w(f, path);
        fill(w);
        // ENOSPC / EFBIG / EIO may only surface here, at fsync or at close: check all three.
        if (std::fflush(f) != 0) throw sys_error(path, "write failed", errno);
        if (::fsync(::fileno(f)) != 0) throw sys_error(path, "fsync failed", errno);
        std::FILE* g = f;
        f = nullptr;   // fclose releases the stream even when it fails
        if (std::fclose(g) != 0) throw sys_error(path, "close failed", errno);
        if (std::rename(tmp.c_str(), path.c_str()) != 0)
            throw sys_error(path, fmt::format("cannot rename temp file '{}' over it", tmp), errno);
    } catch (...) {
        if (f) std::fclose(f);
        ::unlink(tmp.c_str());
        throw;
    }
    fsync_folder(path);
}

void atomic_write_file(const std::string& path, const std::string& bytes) {
    atomic_write_file(path, [&bytes](FileWriter& w) { w.write(bytes); });
}

// What a file that is not a regular one is, for the error message.
static const char* file_kind(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO (named pipe)";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

int open_regular_file(const std::string& path, uint64_t* size) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below). open follows
    // links, so the checks are on the file a link points to.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) throw sys_error(path, "cannot open", errno);
    try {
        struct stat st;
        if (::fstat(fd, &st) != 0) throw sys_error(path, "cannot stat", errno);
        ENGINE_CHECK(!S_ISDIR(st.st_mode), FileError, "{}: is a directory, not a file", path);
        ENGINE_CHECK(S_ISREG(st.st_mode), FileError, "{}: is {}, not a regular file: only regular files are read", path,
                     file_kind(st.st_mode));
        *size = uint64_t(st.st_size);
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

std::string read_file(const std::string& path, size_t max_bytes) {
    uint64_t size = 0;
    const int fd = open_regular_file(path, &size);
    struct Closer { int fd; ~Closer() { ::close(fd); } } closer{fd};
    ENGINE_CHECK(size <= max_bytes, FileError, "{}: file too large ({} bytes; the limit is {})", path, size, max_bytes);
    std::string out;
    out.reserve(size_t(size));
    char buf[1 << 16];
    for (;;) {   // to the end, never past the limit: /proc files say size 0, and a file may grow meanwhile
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw sys_error(path, "read failed", errno);
        if (n == 0) break;
        ENGINE_CHECK(out.size() + size_t(n) <= max_bytes, FileError, "{}: file too large (more than the limit of {} bytes)",
                     path, max_bytes);
        out.append(buf, size_t(n));
    }
    return out;
}

void make_dirs(const std::string& path) {
    for (size_t pos = 1; pos <= path.size(); pos++) {
        if (pos < path.size() && path[pos] != '/') continue;
        const std::string part = path.substr(0, pos);
        if (mkdir(part.c_str(), 0755) != 0 && errno != EEXIST)
            throw FileError(fmt::format("{}: cannot create the folder {}: {}", path, part, std::strerror(errno)));
    }
    struct stat st{};
    if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw FileError(fmt::format("{}: not a folder", path));
}
