"""The log's own words (`why`): what a build log line says about a failed call.

The one owner of three kinds of knowledge the ranking reads in a log:

- which lines are about a failure at all (failure_lines): nixpkgs' stdenv
  logs "evaling implicit 'postPatch' string hook" after `type -p postPatch`
  failed its PATH lookup; that line names postPatch but says nothing failed,
  so it is no evidence against the lookup;
- the errno's text (strerror: "Invalid argument", "Permission denied") and
  the operation's verb ("cannot change ownership"): a line that says both
  is about the call that failed that way (errno_said);
- a small table of tool idioms (IDIOMS), each a real tool's message and the
  failed call it is about: ld's "cannot find -lz" is the failed open of
  libz.so/libz.a in its library directories, Python's "No module named 'X'"
  the failed lookup of X.py, X/ or X.*.so in sys.path.

Pure functions of a cause (rootcause.py's dict) and log lines.
"""

import errno as _errno
import functools
import os
import re

# The errno's text as glibc prints it (strerror), by errno name.
ERRNO_TEXT = {name: os.strerror(num) for num, name in _errno.errorcode.items()}
ERRNO_TEXT["ENOTSUP"] = ERRNO_TEXT.get("EOPNOTSUPP", "Operation not supported")

# Operations, as the calls that do them and the words a message uses for
# them. "Same operation on the same object" (tolerated failures) and the
# verb of a log line both come from here.
OPERATIONS = {
    "owner": (("chown", "fchown", "lchown", "fchownat"),
              ("ownership", "owner", "chown", "chgrp", "group")),
    "mode": (("chmod", "fchmod", "fchmodat", "fchmodat2", "setxattr", "fsetxattr",
              "lsetxattr"), ("permissions", "mode", "chmod", "attribute", "acl",
                             "preserving", "preserve")),
    "time": (("utime", "utimes", "utimensat", "futimesat"),
             ("timestamps", "time", "times")),
    "create": (("mkdir", "mkdirat", "mknod", "mknodat", "creat"),
               ("create", "creating", "mkdir", "make directory")),
    "remove": (("unlink", "unlinkat", "rmdir"), ("remove", "removing", "unlink", "delete")),
    "rename": (("rename", "renameat", "renameat2"), ("rename", "move", "renaming")),
    "link": (("link", "linkat", "symlink", "symlinkat"), ("link", "symlink", "linking")),
    "exec": (("execve", "execveat", "exec"), ("execute", "exec", "run", "spawn")),
    "open": (("open", "openat", "openat2"),
             ("open", "opening", "read", "reading", "write", "writing", "load", "loading",
              "find", "locate", "access")),
    "stat": (("stat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2"),
             ("stat", "access", "find", "exist")),
    "connect": (("connect", "sendto", "sendmsg"), ("connect", "connection", "reach")),
    "bind": (("bind",), ("bind", "listen")),
}
_OP_OF = {call: op for op, (calls, _) in OPERATIONS.items() for call in calls}


def operation(syscall):
    """The operation a call does ("owner", "mode", "open", ...) or None."""
    return _OP_OF.get(syscall or "")


# Words that make a line a statement about a failure (any errno's text too).
_FAILURE = re.compile(
    r"(?i)\b(?:errors?|fail(?:ed|s|ure)?|fatal|cannot|can't|could ?n[o']t|unable|"
    r"not found|no such|denied|refused|invalid|missing|unknown|not permitted|"
    r"abort(?:ed|ing)?|exception|traceback|undefined reference|not supported|"
    r"timed out|unreachable|no module|not installed|not allowed|not exist)\b")
_ERRNO_RE = re.compile("|".join(sorted({re.escape(t) for t in ERRNO_TEXT.values()
                                        if len(t) > 8}, key=len, reverse=True)))


def is_failure_line(line):
    """The line says something failed (its words, an errno's text, an idiom)."""
    return bool(_FAILURE.search(line) or _ERRNO_RE.search(line)
                or any(i.pattern.search(line) for i in IDIOMS))


def failure_lines(lines):
    """The lines of a log that are about a failure, in order."""
    return [l for l in lines if is_failure_line(l)]


# -- the table of tool idioms -------------------------------------------------------

class Idiom:
    """A tool's message and the failed call it is about.

    `names(match, basename)`: the failed path's last component is the object
    the message names; `ops`: the call does that operation; `errnos`: it
    failed with that errno; `kinds`: the cause is of that kind (dns), and
    `host` (a group of the match) its host. A cause links when every
    constraint the row has holds."""

    def __init__(self, name, pattern, example, names=None, ops=(), errnos=(), kinds=(),
                 host=None):
        self.name, self.example = name, example
        self.pattern = re.compile(pattern)
        self.names, self.ops, self.errnos = names, frozenset(ops), frozenset(errnos)
        self.kinds, self.host = frozenset(kinds), host

    def links(self, m, c):
        if self.kinds and c.get("kind") not in self.kinds:
            return False
        if self.host is not None and c.get("host") and c["host"] != m.group(self.host):
            return False
        if self.ops and operation(c.get("syscall")) not in self.ops:
            return False
        if self.errnos and c.get("errno") not in self.errnos:
            return False
        if self.names is not None:
            obj = c.get("accessed") or c.get("path") or ""
            base = c.get("looked_for") or c.get("command") or obj.rstrip("/").rsplit("/", 1)[-1]
            return bool(base) and self.names(m, base, obj)
        return True


def _lib(m, base, obj):          # -lNAME: libNAME.so (any version), libNAME.a
    lib = "lib" + m.group(1)
    return base in (lib + ".so", lib + ".a") or base.startswith(lib + ".so.")


def _exact(m, base, obj):
    return base == m.group(1)


def _module(m, base, obj):       # 'a.b.c': c.py, c/, c.cpython-311-x86_64-linux-gnu.so
    mod = m.group(1).rsplit(".", 1)[-1]
    return base == mod or base.startswith(mod + ".")


def _suffix(m, base, obj):       # Foo/Bar.pm, found under each @INC directory
    return obj.endswith("/" + m.group(1))


def _services(m, base, obj):     # getservbyname's database
    return base == "services"


def _locale(m, base, obj):       # setlocale's database: glibc reads the archive first
    return base == "locale-archive"


def _entity(m, base, obj):       # libxml2: the catalog that maps the URL, or the file
    return base == "catalog" or base == m.group(1).rstrip("/").rsplit("/", 1)[-1]


IDIOMS = (
    Idiom("ld: cannot find -lNAME", r"cannot find -l([\w.+-]+)",
          "/usr/bin/ld: cannot find -lz: No such file or directory", names=_lib),
    Idiom("loader: error while loading shared libraries",
          r"error while loading shared libraries: ([^\s:]+)",
          "./minigzip: error while loading shared libraries: libz.so.1: cannot open "
          "shared object file: No such file or directory", names=_exact),
    Idiom("python: No module named", r"No module named '?([\w.]+)'?",
          "ModuleNotFoundError: No module named 'yaml'", names=_module),
    Idiom("perl: Can't locate X.pm", r"Can't locate ([\w/]+\.pm) in @INC",
          "Can't locate Text/Unidecode.pm in @INC (you may need to install the "
          "Text::Unidecode module)", names=_suffix),
    Idiom("shell: command not found", r"(?<![\w./-])([\w.+-]+): (?:command )?not found",
          "sh: 1: xsltproc: not found", names=_exact),
    Idiom("coreutils: cannot change ownership",
          r"cannot change ownership|changing ownership of|failed to preserve ownership",
          "install: cannot change ownership of '/nix/store/...-x/f': Invalid argument",
          ops=("owner",)),
    Idiom("coreutils: cannot change permissions",
          r"cannot change permissions|changing permissions of|failed to preserve permissions",
          "chmod: changing permissions of '/nix/store/...-x/f': Operation not permitted",
          ops=("mode",)),
    Idiom("Permission denied", r"Permission denied",
          "sh: 1: cannot create /usr/share/x: Permission denied", errnos=("EACCES", "EPERM")),
    Idiom("Read-only file system", r"Read-only file system",
          "mkdir: cannot create directory '/nix/store/x': Read-only file system",
          errnos=("EROFS",)),
    Idiom("curl/git: Could not resolve host", r"[Cc]ould not resolve host:? '?([\w.-]+)",
          "fatal: unable to access 'https://git.example.com/x.git/': Could not resolve "
          "host: git.example.com", kinds=("dns",), host=1),
    Idiom("resolver: name resolution failed",
          r"Temporary failure in name resolution|Name or service not known|"
          r"No address associated with hostname|failed to resolve|getaddrinfo",
          "socket.gaierror: [Errno -3] Temporary failure in name resolution",
          kinds=("dns",)),
    Idiom("setlocale: unsupported locale", r"unsupported locale setting|[Ss]etting locale "
          r"failed|cannot change locale|Cannot set LC_\w+ to default locale",
          "locale.Error: unsupported locale setting", names=_locale),
    Idiom("libxml2: failed to load external entity",
          r"failed to load external entity \"([^\"]+)\"",
          'warning: failed to load external entity "http://docbook.sourceforge.net/release/'
          'xsl/current/manpages/docbook.xsl"', names=_entity),
    Idiom("libc: service/proto not found", r"service/proto not found|getservbyname",
          "OSError: service/proto not found", names=_services),
)


def idiom_link(c, lines):
    """The name of the first idiom of `lines` about cause `c`, or None."""
    for line in lines:
        for i in IDIOMS:
            m = i.pattern.search(line)
            if m and i.links(m, c):
                return i.name
    return None


def errno_said(c, lines):
    """A line says this call's errno in words (strerror) together with its
    operation's verb or its object's name as a word: "cannot change
    ownership of '...': Invalid argument" is the fchownat that failed with
    EINVAL. Not for a failed lookup (ENOENT, ENOTDIR): "No such file or
    directory" ends half the lines of a failed build; there the path or
    name has to say it."""
    text = ERRNO_TEXT.get(c.get("errno") or "")
    if not text or c.get("errno") in LOOKUP_ERRNOS:
        return False
    words = OPERATIONS.get(operation(c.get("syscall")), ((), ()))[1]
    obj = c.get("accessed") or c.get("path") or ""
    base = obj.rstrip("/").rsplit("/", 1)[-1]
    for line in lines:
        if text not in line:
            continue
        low = line.lower()
        if (len(base) > 2 and _name(base).search(line)) or any(_word(w).search(low)
                                                              for w in words):
            return True
    return False


LOOKUP_ERRNOS = frozenset(("ENOENT", "ENOTDIR"))


@functools.lru_cache(maxsize=4096)
def _name(base):
    return re.compile(r"(?<![\w.-])" + re.escape(base) + r"(?![\w-])")


@functools.lru_cache(maxsize=512)
def _word(w):
    return re.compile(r"\b" + re.escape(w) + r"\b")
