"""recorder/linux.py's readers of a tracee's memory, on this process's own."""

import ctypes
import mmap
import os

from nixrec.recorder import linux


def test_read_cstrs_answers_as_read_cstr_does_one_by_one():
    """An exec's argv is read with one process_vm_readv (read_cstrs): the
    words must be read_cstr's, whatever their length and wherever they end,
    up to a word cut by an unreadable page."""
    page = mmap.PAGESIZE
    m = mmap.mmap(-1, 4 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(base + 3 * page), page, 0) == 0   # PROT_NONE

    def put(off, data):
        m[off:off + len(data)] = data
        return base + off

    addrs = [
        put(0, b"cc\0"),
        put(16, b"x" * 300 + b"\0"),                 # longer than the first read
        put(400, b"\0"),                             # empty
        put(page - 5, b"abcd\0"),                    # ends at the page's end
        put(page - 3, b"ab"),                        # crosses into the next page
        put(page + 1, b"y" * 5000),                  # longer than the limit
        put(3 * page - 4, b"zzzz"),                  # runs into the unreadable page
        put(600, b"last\0"),                         # after the cut one
    ]
    m[page - 1:page + 1] = b"c\0"
    pid = os.getpid()
    one_by_one = [linux.read_cstr(pid, a, 4096) for a in addrs]
    assert one_by_one[0] == b"cc" and one_by_one[6] == b"zzzz" and one_by_one[7] == b"last"
    assert linux.read_cstrs(pid, addrs, 4096) == one_by_one
    # More words than one call takes (1,024 iovecs), and the empty list.
    many = [addrs[0], addrs[7]] * 700
    assert linux.read_cstrs(pid, many, 4096) == [b"cc", b"last"] * 700
    assert linux.read_cstrs(pid, [], 4096) == []
