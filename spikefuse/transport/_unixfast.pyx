# The unix:// transport's per-message work, compiled. Receiving: one recvmsg into a buffer
# owned here, the fds passed with it (SCM_RIGHTS) collected, and an inline datagram split
# into [topic, payload] in the same call. Sending: the check for what the publisher has to
# take in first and one gathered sendmsg per subscriber. The wire format and its constants are
# spikefuse.transport.unix's (passed in at construction); that module is the only user.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.uio cimport iovec

import os


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    ssize_t recvmsg(int fd, msghdr* msg, int flags)
    cmsghdr* CMSG_FIRSTHDR(msghdr* msg)
    cmsghdr* CMSG_NXTHDR(msghdr* msg, cmsghdr* c)
    unsigned char* CMSG_DATA(cmsghdr* c)
    size_t CMSG_LEN(size_t n)
    int SOL_SOCKET
    int SCM_RIGHTS
    int MSG_TRUNC
    int MSG_DONTWAIT


cdef enum:
    CONTROL_WORDS = 32  # 256 bytes: the one fd expected and strays (all closed by the caller)


cdef class DatagramReader:
    """Receives one datagram at a time from a non-blocking SEQPACKET socket's fd.

    ``recv(fd)`` returns None when nothing is waiting, ``b""`` when the peer closed, a
    tuple of the fds that came with the datagram (SCM_RIGHTS: the caller reads and closes
    them), or the datagram's frames: :meth:`split` of it, or one frame of its first
    ``short_bytes`` when it was longer than the buffer (not one of ours). Another error is
    an OSError."""

    cdef uint8_t* buf
    cdef Py_ssize_t size
    cdef Py_ssize_t head_bytes
    cdef Py_ssize_t short_bytes
    cdef uint8_t marker
    cdef size_t[CONTROL_WORDS] control  # cmsghdr-aligned

    def __cinit__(self):
        self.buf = NULL

    def __init__(self, Py_ssize_t size, bytes marker, Py_ssize_t head_bytes, Py_ssize_t short_bytes):
        """``size``: the longest datagram taken whole; ``marker``: the one byte opening an
        inline message, followed by the topic length (u32 little-endian), so its header is
        ``head_bytes`` long; ``short_bytes``: what of a longer datagram is kept."""
        if len(marker) != 1 or head_bytes != 5 or not 0 < short_bytes <= size:
            raise ValueError("DatagramReader: a one-byte marker and a u32 topic length")
        self.buf = <uint8_t*>malloc(size)
        if self.buf == NULL:
            raise MemoryError()
        self.size = size
        self.marker = marker[0]
        self.head_bytes = head_bytes
        self.short_bytes = short_bytes

    def __dealloc__(self):
        free(self.buf)

    def recv(self, int fd):
        cdef msghdr msg
        cdef iovec iov
        cdef cmsghdr* c
        cdef ssize_t n
        cdef Py_ssize_t k, nfd
        cdef int one
        memset(&msg, 0, sizeof(msg))
        iov.iov_base = self.buf
        iov.iov_len = self.size
        msg.msg_iov = &iov
        msg.msg_iovlen = 1
        msg.msg_control = self.control
        msg.msg_controllen = sizeof(self.control)
        while True:
            with nogil:
                n = recvmsg(fd, &msg, MSG_DONTWAIT)
            if n >= 0:
                break
            if errno == EAGAIN:  # (EWOULDBLOCK on Linux)
                return None
            if errno != EINTR:
                raise OSError(errno, os.strerror(errno))
        fds = None
        if msg.msg_controllen:
            c = CMSG_FIRSTHDR(&msg)
            while c != NULL:
                if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_RIGHTS:
                    nfd = (c.cmsg_len - CMSG_LEN(0)) // sizeof(int)
                    for k in range(nfd):
                        memcpy(&one, CMSG_DATA(c) + k * sizeof(int), sizeof(int))
                        fds = (one,) if fds is None else fds + (one,)
                c = CMSG_NXTHDR(&msg, c)
        if fds is not None:
            return fds
        if n == 0:
            return b""
        if msg.msg_flags & MSG_TRUNC:
            return [PyBytes_FromStringAndSize(<char*>self.buf, self.short_bytes)]
        return self._split(self.buf, n)

    def split(self, const uint8_t[::1] data):
        """``[topic, payload]`` of an inline message (marker, topic length, topic,
        payload); a malformed one as one frame."""
        if data.shape[0] == 0:
            return [b""]
        return self._split(&data[0], data.shape[0])

    cdef list _split(self, const uint8_t* b, Py_ssize_t n):
        cdef uint32_t tlen
        cdef Py_ssize_t end
        if n < self.head_bytes or b[0] != self.marker:
            return [PyBytes_FromStringAndSize(<const char*>b, n)]
        tlen = b[1] | (<uint32_t>b[2] << 8) | (<uint32_t>b[3] << 16) | (<uint32_t>b[4] << 24)
        end = self.head_bytes + <Py_ssize_t>tlen
        if end > n:
            return [PyBytes_FromStringAndSize(<const char*>b, n)]
        return [
            PyBytes_FromStringAndSize(<const char*>b + self.head_bytes, tlen),
            PyBytes_FromStringAndSize(<const char*>b + end, n - end),
        ]


cdef extern from "<sys/socket.h>" nogil:
    ssize_t sendmsg(int fd, const msghdr* msg, int flags)
    int MSG_NOSIGNAL


cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t:
        int fd
    struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)


cdef class DatagramSender:
    """The publisher's per-message send: :meth:`pending` tells whether its epoll set has
    something to take in first (a new subscriber, a notice, a leaver) without taking it;
    :meth:`send` sends ``head + payload`` as one datagram to each fd (gathered, no copy into
    one buffer) without blocking."""

    cdef int epfd

    def __init__(self, int epfd):
        self.epfd = epfd

    def pending(self):
        cdef epoll_event ev
        cdef int r
        with nogil:
            r = epoll_wait(self.epfd, &ev, 1, 0)
        return r != 0  # an error too: the caller's own epoll call then raises it

    def send(self, tuple fds, bytes head, bytes payload):
        """None when every fd took the datagram, else a list of (position in ``fds``,
        errno) of those that did not."""
        cdef iovec iov[2]
        cdef msghdr msg
        cdef Py_ssize_t k
        cdef int fd
        cdef ssize_t r
        memset(&msg, 0, sizeof(msg))
        iov[0].iov_base = <void*>PyBytes_AS_STRING(head)
        iov[0].iov_len = PyBytes_GET_SIZE(head)
        iov[1].iov_base = <void*>PyBytes_AS_STRING(payload)
        iov[1].iov_len = PyBytes_GET_SIZE(payload)
        msg.msg_iov = iov
        msg.msg_iovlen = 2
        failed = None
        for k in range(len(fds)):
            fd = fds[k]
            while True:
                with nogil:
                    r = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL)
                if r >= 0 or errno != EINTR:
                    break
            if r < 0:
                if failed is None:
                    failed = []
                failed.append((k, errno))
        return failed
