"""Nix's checks on a finished build's outputs (nix-sandbox.md §2.8), so that a
build recorded by nixrec fails where Nix would fail it, with Nix's words.

`check` takes the derivation, the plan, where the outputs are and the store
paths they may refer to, and returns the first error message (or None), what
each output refers to and what failed. On the way it canonicalises the outputs
(modes, mtimes: `canonicalise`), where registerOutputs does: after the
permission check, before the scan.
"""

import base64
import hashlib
import os
import stat

from nixrec.recorder import tree
from nixrec.recorder.nix import store

# registerOutputs' file types: anything else is "an unsupported type".
_ALLOWED = (stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK)
# checkOutputs' lists, in the order Nix applies them: (attribute, allowed?, closure?).
_REF_CHECKS = (("allowedReferences", True, False), ("allowedRequisites", True, True),
               ("disallowedReferences", False, False), ("disallowedRequisites", False, True))


def check(d, plan, outputs_dir, referenceable=(), against_store=False) -> dict:
    """Nix's checks, in registerOutputs' order: each output's permissions and
    file types, then (every output canonicalised) the references between
    outputs (a cycle fails), a fixed output's hash, checkOutputs' reference
    and size rules and, `against_store` (nix-build --check), the comparison
    with the outputs already in the store. -> {"error": Nix's message for the
    first failure, or None; "references": {output name: sorted store paths it
    refers to}; "failed": what failed, for `nixrec why` (failure(): the check,
    the output, the files to blame, the paths a rule forbids), or None;
    "hidden": hidden_references()}.

    outputs_dir holds each output by its store basename; `referenceable` is
    the input closure (inputPaths: what scanForReferences looks for, with the
    outputs themselves).
    """
    try:
        found, failed = _each_output(d, outputs_dir)
        if failed:
            return failed
        return _check_found(d, plan, found, referenceable, against_store)
    except OSError as e:
        # The build ran; only its outputs could not be read: the trace stays whole.
        return _verdict(f"cannot read the outputs to check them: {e}", {}, None)


def _check_found(d, plan, found, referenceable, against_store):
    """check(), from the references on: `found` passed _each_output."""
    candidates = set(referenceable) | {o.path for o in d.outputs.values()}
    scans = {name: store.scan(path, candidates) for name, path in found.items()}
    refs = {name: s[0] for name, s in scans.items()}
    hidden = hidden_references(d, found, {name: s[1] for name, s in scans.items()},
                               candidates)
    by_path = {d.outputs[name].path: name for name in found}
    cycle = _cycle(plan.drv_path, refs, by_path)
    if cycle:
        err, (child, parent) = cycle
        files = _referring(found[parent], d.outputs[parent].path, [d.outputs[child].path])
        child_path = d.outputs[child].path
        return _verdict(err, refs, failure("cycle", parent, files, [child_path], [child_path]),
                        hidden)
    for name, path in found.items():
        out = d.outputs[name]
        if out.hash_algo and out.hash:
            err, failed = _check_fixed(plan, name, out, path, refs[name])
            if err:
                return _verdict(err, refs, failed, hidden)
    err, failed = _check_outputs(d, plan.drv_path, found, refs)
    if err is None and against_store:
        err, failed = _compare_with_store(d, plan.drv_path, found)
    return _verdict(err, refs, failed, hidden)


def _compare_with_store(d, drv_path, found, limit=10):
    """nix-build --check: each output built again against the one in the
    store. -> (Nix's error for the first output that differs, or None;
    failure("deterministic", ...) naming up to `limit` files that differ)."""
    for name, copy in sorted(found.items()):
        out = d.outputs[name]
        files = differing(copy, out.path, limit)
        if files:
            return (f"derivation '{drv_path}' may not be deterministic: output "
                    f"'{out.path}' differs", failure("deterministic", name, files))
    return None, None


def differing(copy, stored, limit):
    """Store paths of the entries where two trees differ, as their NARs would:
    an entry only in one, another type, executable bit, link target or
    contents (modes and mtimes are canonical in both)."""
    found = []
    todo = [""]                 # its own stack: the build chose the depth (issue 23)
    while todo and len(found) < limit:
        rel = todo.pop()
        a, b = copy + rel, stored + rel
        ka, kb = _kind(a), _kind(b)
        if ka != kb:
            found.append(stored + rel)
        elif ka == "dir":
            names = sorted(set(os.listdir(a)) | set(os.listdir(b)), key=os.fsencode)
            todo.extend(f"{rel}/{n}" for n in reversed(names))
        elif ka == "link":
            if os.readlink(a) != os.readlink(b):
                found.append(stored + rel)
        elif ka is not None and not _same_file(a, b):
            found.append(stored + rel)
    return found


def _kind(p):
    if not os.path.lexists(p):
        return None
    st = os.lstat(p)
    if stat.S_ISLNK(st.st_mode):
        return "link"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "exe" if st.st_mode & 0o100 else "file"


def _same_file(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _each_output(d, outputs_dir):
    """registerOutputs' first steps, output by output: the permission check,
    then canonicalisePathMetaData (which also refuses a FIFO, socket or
    device). Every output is canonicalised, also after a failure: they are
    handed to the user as the store would hold them. -> ({name: its copy in
    outputs_dir}, None), or (_, the verdict of the first failure)."""
    found, failed = {}, None
    for name, out in sorted(d.outputs.items()):
        path = os.path.join(outputs_dir, os.path.basename(out.path))
        if not os.path.lexists(path):
            continue                      # reported by the caller, as Nix does first
        st = os.lstat(path)
        if failed is None and not stat.S_ISLNK(st.st_mode) \
                and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            failed = _verdict(f"suspicious ownership or permission on '{out.path}' for "
                              f"output '{name}'; rejecting this build output",
                              {}, failure("permissions", name, [out.path]))
        bad = canonicalise(path)
        if failed is None and bad:
            file = out.path + bad[len(path):]
            failed = _verdict(f"file '{file}' has an unsupported type", {},
                              failure("unsupported", name, [file]))
        found[name] = path
    return found, failed


def failure(check, output, files=(), paths=(), through=()) -> dict:
    """What `nixrec why` is told of a failed output check (the trace summary's
    `output_check`): the check, the output's name, the store paths of the
    files to blame (their writers are in the trace), the paths a rule forbids
    and the output's references that lead to them (the files hold those)."""
    return {"check": check, "output": output, "files": list(files), "paths": list(paths),
            "through": list(through)}


def _verdict(error, refs, failed, hidden=None):
    return {"error": error, "references": _sorted(refs), "failed": failed,
            "hidden": hidden or {}}


def hidden_references(d, found, named, candidates, limit=10) -> dict:
    """{output name: [{"path", "files"}]}: the store paths each output names
    in full (`named`, from store.scan) that are neither inputs nor outputs.
    Nix records a reference only to its candidates (scanForReferences), so
    such a path is not in the output's closure: wherever the output is copied
    without it, the path is missing (a hard-coded path, a string whose context
    was discarded)."""
    known = {os.path.basename(c)[:32] for c in candidates}
    out = {}
    for name, path in sorted(found.items()):
        hidden = sorted(p for p in named[name] if os.path.basename(p)[:32] not in known)[:limit]
        if hidden:
            out[name] = [{"path": p, "files": _referring(path, d.outputs[name].path, [p],
                                                         limit=3)}
                         for p in hidden]
    return out


def _sorted(refs):
    return {name: sorted(paths) for name, paths in refs.items()}


def _cycle(drv_path, refs, by_path):
    """topoSort of the outputs by their references to each other: a cycle is
    Nix's error, named where its depth-first walk (outputs by name) meets it."""
    done, parents = set(), []

    def visit(name, parent):
        if name in parents:
            return (f"cycle detected in build of '{drv_path}' in the references of "
                    f"output '{name}' from output '{parent}'"), (name, parent)
        if name in done:
            return None
        done.add(name)
        parents.append(name)
        for child in sorted(by_path[p] for p in refs[name] if p in by_path):
            if child != name:
                err = visit(child, name)
                if err:
                    return err
        parents.pop()
        return None

    for name in sorted(refs):
        err = visit(name, None)
        if err:
            return err
    return None


def _check_outputs(d, d_path, found, refs):
    """checkOutputs: each output by name, against the derivation's
    allowed/disallowed References/Requisites (env attributes: every output,
    self-references ignored in closures) or, with structured attrs, its own
    outputChecks (maxSize and maxClosureSize too; Nix 2.8 reads no
    ignoreSelfRefs there)."""
    paths = {name: d.outputs[name].path for name in found}
    sa = d.structured_attrs
    for name in sorted(found):
        if sa is None:
            rules = {k: d.strings_attr(k) for k, _, _ in _REF_CHECKS if k in d.env}
            ignore_self = True
        else:
            checks = sa.get("outputChecks")
            # Nix 2.8 finds nothing in an outputChecks that is not an object.
            rules = checks.get(name) if isinstance(checks, dict) else None
            if not isinstance(rules, dict):
                continue
            ignore_self = False
            err = _check_sizes(paths[name], found, paths, refs, rules)
            if err:
                return err, failure("size", name, [paths[name]])
        for key, allowed, closure in _REF_CHECKS:
            spec = rules.get(key)
            if spec is None:
                continue
            if isinstance(spec, str):
                spec = [spec]             # a JSON string iterates as itself in Nix 2.8
            if not isinstance(spec, list) or not all(isinstance(i, str) for i in spec):
                return (f"attribute '{key}' of derivation '{d_path}' must be a list of strings",
                        failure("rule", name))
            wanted = set()
            for item in spec:
                if store.is_store_path(item):
                    wanted.add(item)
                elif item in paths:
                    wanted.add(paths[item])
                else:
                    return (f"derivation contains an illegal reference specifier '{item}'",
                            failure("rule", name))
            used = _requisites(paths[name], paths, refs) if closure else set(refs[name])
            if closure and ignore_self:
                used.discard(paths[name])
            bad = sorted(p for p in used if (p in wanted) != allowed)
            if bad:
                # Nix lists them one per line; nixrec's errors are one line.
                through = _through(name, bad, paths, refs)
                files = _referring(found[name], paths[name], through)
                return (f"output '{paths[name]}' is not allowed to refer to the following "
                        f"paths: {' '.join(bad)}", failure(key, name, files, bad, through))
    return None, None


def _through(name, bad, paths, refs):
    """The output's own references that lead to the `bad` paths: each one
    itself when referred to directly, else the references whose closure
    holds it (a requisite)."""
    direct = set(refs[name]) - {paths[name]}
    found = set()
    for b in bad:
        if b in direct or b == paths[name]:
            found.add(b)
        else:
            found |= {r for r in direct if b in _requisites(r, paths, refs)}
    return sorted(found)


def _referring(copy, out_path, targets, limit=10):
    """Up to `limit` files of an output (as store paths under out_path) whose
    name, link target or contents hold the hash part of one of `targets`: what
    `nixrec why` blames (the trace names their writers)."""
    hashes = [os.path.basename(t)[:32] for t in targets]
    hits = []
    for p in _entries(copy):
        rel = p[len(copy):]
        named = bool(rel) and any(h in os.path.basename(p) for h in hashes)
        # A directory's contents are entries of their own; a file's or a
        # link's NAR holds its contents or its target.
        leaf = os.path.islink(p) or not os.path.isdir(p)
        if named or (leaf and store.references_in(p, targets)):
            hits.append(out_path + rel)
            if len(hits) >= limit:
                break
    return hits


def _entries(path):
    """`path`, then everything under it (a directory's entries by name)."""
    return tree.entries(path)


def _requisites(path, paths, refs):
    """The closure of an output: other outputs through their scanned
    references, inputs through the store's (nix-store -qR)."""
    by_path = {p: name for name, p in paths.items()}
    seen, todo, inputs = set(), [path], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        if p in by_path:
            todo += [r for r in refs.get(by_path[p], ()) if r not in seen]
        else:
            inputs.add(p)
    return seen | set(store.closure(sorted(inputs)))


def _check_sizes(path, found, paths, refs, rules):
    """outputChecks' maxSize (the output's NAR) and maxClosureSize (the NARs
    of its closure: inputs' sizes from the store, outputs' from their copies)."""
    max_size, max_closure = rules.get("maxSize"), rules.get("maxClosureSize")
    for v in (max_size, max_closure):
        if v is not None and type(v) not in (int, float):
            # nlohmann::json's get<uint64_t>(), as Nix 2.8 reads it.
            return f"[json.exception.type_error.302] type must be number, but is {_json_type(v)}"
    copy = {p: found[n] for n, p in paths.items()}          # output path -> TRACE.d copy
    if max_size is not None:
        size = store.nar_size(copy[path])
        if size > max_size:
            return f"path '{path}' is too large at {size} bytes; limit is {max_size} bytes"
    if max_closure is not None:
        members = _requisites(path, paths, refs)
        inputs = sorted(p for p in members if p not in copy)
        total = sum(store.nar_sizes(inputs).values()) + sum(
            store.nar_size(copy[p]) for p in members if p in copy)
        if total > max_closure:
            return (f"closure of path '{path}' is too large at {total} bytes; "
                    f"limit is {max_closure} bytes")
    return None


def _json_type(v):
    return {bool: "boolean", str: "string", list: "array", dict: "object"}.get(type(v), "null")


def _check_fixed(plan, name, out, path, refs):
    """A fixed output, as registerOutputs checks it: a flat one must be a
    non-executable regular file (Nix throws at once), then the declared hash
    (flat or NAR), then no references (both delayed: the later error is the
    one Nix reports). -> (Nix's error, failure()) or (None, None)."""
    err = _flat_file_error(out, path)
    if err:
        return err, failure("hash", name, [out.path])
    err, failed = _hash_error(plan, out, path), failure("hash", name, [out.path])
    if refs:
        # Nix 2.8 has no verdict here: a flat output aborts it on an assertion,
        # a NAR one is registered under another path than the one promised
        # (NixOS/nix#7148, #5509). Later Nix fails the build with these words,
        # which is what a user has to hear: the file that names a store path.
        held = sorted(refs)
        err = f"illegal path references in fixed-output derivation '{plan.drv_path}'"
        failed = failure("fixed-references", name, _referring(path, out.path, held), held,
                         held)
    return (err, failed) if err else (None, None)


def _flat_file_error(out, path):
    if out.hash_algo.startswith("r:"):
        return None
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o111:
        return (f"output path '{out.path}' should be a non-executable regular file "
                "since recursive hashing is not enabled (outputHashMode=flat)")
    return None


def _hash_error(plan, out, path):
    """Nix's "hash mismatch" when the output's hash is not the declared one."""
    recursive = out.hash_algo.startswith("r:")
    algo = out.hash_algo[2:] if recursive else out.hash_algo
    try:
        h = hashlib.new(algo)
    except ValueError:
        return None                       # an algorithm Python lacks: nothing to compare
    if recursive:
        for chunk in store.nar(path):
            h.update(chunk)
    else:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    got = h.hexdigest()
    if got == out.hash:
        return None
    # Nix's message, on one line (nixrec's results are one line each).
    return (f"hash mismatch in fixed-output derivation '{plan.drv_path}': "
            f"specified: {_sri(algo, out.hash)}, got: {_sri(algo, got)}")


def _sri(algo, hex_hash):
    return f"{algo}-{base64.b64encode(bytes.fromhex(hex_hash)).decode()}"


def canonicalise(path):
    """canonicalisePathMetaData: each entry once, modes 0444 or 0555
    (user-executable), mtime 1. -> the first entry the store cannot hold
    (not a regular file, directory or symlink), or None."""
    bad = None
    for p in _entries(path):
        st = os.lstat(p)
        if bad is None and not any(ok(st.st_mode) for ok in _ALLOWED):
            bad = p
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(p, 0o555 if st.st_mode & stat.S_IXUSR else 0o444)
        os.utime(p, (1, 1), follow_symlinks=False)
    return bad
