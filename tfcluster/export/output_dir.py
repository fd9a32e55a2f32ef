"""Output directories tfcluster owns: it replaces or deletes only what it wrote there.

`tfcluster cluster` and `tfcluster predict` write into an `--output` directory.
`OutputDir.claim` checks it before any training:
  - the output and every input (image folder, .npz file, model) are disjoint both
    ways, on their real paths: an output inside an input would be read back as
    images by the next run; an input inside an output could be replaced by it;
  - a directory that already holds entries tfcluster did not write (not listed in
    its manifest) is refused, unless `overwrite`: then tfcluster writes its own
    files among them, replacing only files of the same names, and still deletes
    nothing it did not write;
  - a directory written by the other command is refused.
What tfcluster writes is listed in OUT/.tfcluster-manifest.json (written
atomically, and before the files it lists are made, so that an interrupted run
leaves nothing unlisted). A re-run deletes only listed entries, and only when
they are still what tfcluster made: a symbolic link it made, a copy of the size
and modification time it recorded, a directory it made that is empty once its
files are gone. No path is ever deleted or written through a symbolic link.
"""

from __future__ import annotations

import json
import os
import shutil

from tfcluster import config as config_lib
from tfcluster.errors import InputError

MANIFEST = ".tfcluster-manifest.json"
# Entry kinds: a file tfcluster writes whole (replaced atomically), a directory it made, a symbolic link or
# a copy of an image it made, a work directory whose whole tree is tfcluster's (a training run).
KINDS = ("file", "dir", "link", "copy", "tree")


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def check_disjoint(output: str, inputs, flag: str = "--output") -> None:
    """InputError when `output` and one of `inputs` (paths; None entries skipped) lie inside one another.

    Compares real paths (symbolic links resolved) and the paths as given.
    """
    for given in inputs:
        if not given:
            continue
        for out, inp in ((os.path.realpath(output), os.path.realpath(given)),
                         (os.path.abspath(output), os.path.abspath(given))):
            if _inside(out, inp):
                raise InputError(f"the output directory {output!r} is inside (or is) the input {given!r}: a re-run "
                                 f"would read tfcluster's outputs as inputs; choose a {flag} outside it")
            if _inside(inp, out):
                raise InputError(f"the input {given!r} is inside the output directory {output!r}: tfcluster would "
                                 f"write where it reads; choose a {flag} that does not contain the input")


class OutputDir:
    """An output directory and its manifest. Make one with `claim`.

    Attributes:
      root: the directory (absolute).
      command: the tfcluster command whose outputs it holds ("cluster", "predict").
      entries: relative path -> record ({"kind": one of KINDS, ...}) of what tfcluster wrote.
      overwrite: files of tfcluster's names that tfcluster did not write may be replaced.
    """

    def __init__(self, root: str, command: str, entries: dict, overwrite: bool):
        self.root = root
        self.command = command
        self.entries = entries
        self.overwrite = overwrite

    # -- claiming ----------------------------------------------------------------------------------
    @classmethod
    def claim(cls, path: str, command: str, inputs=(), overwrite: bool = False,
              flag: str = "--output") -> "OutputDir":
        """Checks `path` for `command` (see the module docstring), creates it and writes its manifest.

        Raises InputError naming the problem; nothing is written then.
        """
        if not path:
            raise InputError(f"{flag} is empty: give the directory to write into")
        root = os.path.abspath(path)
        check_disjoint(root, inputs, flag)
        entries = {}
        if os.path.lexists(root):
            if not os.path.isdir(root):
                raise InputError(f"{flag} {path!r} exists and is not a directory")
            manifest = os.path.join(root, MANIFEST)
            if os.path.lexists(manifest):
                entries, owner = cls._read_manifest(manifest, overwrite)
                if owner and owner != command:
                    raise InputError(f"{path!r} holds the outputs of `tfcluster {owner}`; give `tfcluster {command}` "
                                     f"another {flag}")
            foreign = sorted(name for name in os.listdir(root) if name != MANIFEST and name not in entries)
            if foreign and not overwrite:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise InputError(f"{flag} {path!r} holds files tfcluster did not write ({shown}); choose a new or "
                                 f"empty directory, or pass --overwrite to write tfcluster's outputs among them "
                                 f"(files of the same names are replaced, nothing else is touched)")
        out = cls(root, command, entries, overwrite)
        out.save()
        return out

    @staticmethod
    def _read_manifest(path: str, overwrite: bool) -> tuple[dict, str | None]:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            entries = data["entries"]
            if not (isinstance(entries, dict) and all(isinstance(v, dict) and v.get("kind") in KINDS
                                                      for v in entries.values())):
                raise ValueError("bad entries")
            if not all(_safe_relative(rel) for rel in entries):  # never a path outside the directory
                raise ValueError("an entry outside the directory")
            return entries, data.get("command")
        except (OSError, ValueError, KeyError, TypeError) as e:
            if overwrite:  # nothing listed: tfcluster deletes nothing here, and replaces files of its names
                return {}, None
            raise InputError(f"{path} is unreadable ({type(e).__name__}), so tfcluster cannot tell its own files "
                             "from others there: choose a new output directory, or pass --overwrite") from None

    def save(self) -> None:
        """Writes the manifest atomically."""
        config_lib.write_json(os.path.join(self.root, MANIFEST),
                              {"tool": "tfcluster", "command": self.command, "entries": self.entries})

    # -- paths --------------------------------------------------------------------------------------
    def _full(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))

    def _check_no_links(self, rel: str) -> None:
        """InputError when a directory on the way to `rel` (below the root) is a symbolic link or no directory."""
        parts = rel.split("/")
        for i in range(1, len(parts)):
            sub = "/".join(parts[:i])
            full = self._full(sub)
            if os.path.islink(full) or (os.path.lexists(full) and not os.path.isdir(full)):
                raise InputError(f"{full} is a symbolic link or not a directory; tfcluster writes only into "
                                 "directories it can own: move it away, or choose another output directory")

    def _may_replace(self, rel: str, kind: str) -> None:
        """InputError unless whatever is at `rel` may be replaced by tfcluster's `kind` of entry."""
        self._check_no_links(rel)
        full = self._full(rel)
        if not os.path.lexists(full):
            return
        link, isdir = os.path.islink(full), os.path.isdir(full)
        if kind in ("dir", "tree"):
            if link or not isdir:
                raise InputError(f"{full} is {'a symbolic link' if link else 'a file'} where tfcluster makes a "
                                 "directory; move it away, or choose another output directory")
            if rel in self.entries or self.overwrite:
                return
            raise InputError(f"{full} is a directory tfcluster did not make; move it away or pass --overwrite")
        if isdir and not link:
            raise InputError(f"{full} is a directory where tfcluster writes a file; move it away")
        if rel in self.entries or self.overwrite:
            return
        raise InputError(f"{full} exists and tfcluster did not write it; move it away or pass --overwrite")

    def file(self, rel: str) -> str:
        """The path to write tfcluster's file `rel` ("a/b.csv") at, recorded; replace it atomically (os.replace)."""
        self._may_replace(rel, "file")
        if self.entries.get(rel, {}).get("kind") != "file":
            self.entries[rel] = {"kind": "file"}
            self.save()
        return self._full(rel)

    def workdir(self, rel: str) -> str:
        """A directory whose whole tree tfcluster writes (a training run), recorded and made."""
        self._may_replace(rel, "tree")
        if self.entries.get(rel, {}).get("kind") != "tree":
            self.entries[rel] = {"kind": "tree"}
            self.save()
        os.makedirs(self._full(rel), exist_ok=True)
        return self._full(rel)

    # -- trees of links and copies --------------------------------------------------------------------
    def clear(self, top: str) -> list[str]:
        """Deletes what tfcluster made under `top` (and `top` itself, when it made it and it is left empty).

        A listed link is removed only while it is a link, a listed copy only while it has its recorded size
        and modification time. Returns the paths left in place (changed or not tfcluster's), relative.
        """
        self._check_no_links(top + "/x")
        mine = sorted((r for r in self.entries if r == top or r.startswith(top + "/")), key=lambda r: -r.count("/"))
        kept = []
        for rel in mine:
            record, full = self.entries[rel], self._full(rel)
            kind = record["kind"]
            try:
                self._check_no_links(rel)
            except InputError:  # reached through a link now: not deleted, and no longer tfcluster's
                kept.append(rel)
                del self.entries[rel]
                continue
            if not os.path.lexists(full):
                del self.entries[rel]
                continue
            if kind == "link" and os.path.islink(full):
                os.unlink(full)
            elif kind == "copy" and not os.path.islink(full) and os.path.isfile(full) and \
                    _stamp(full) == (record.get("size"), record.get("mtime_ns")):
                os.unlink(full)
            elif kind == "dir" and os.path.isdir(full) and not os.path.islink(full) and not os.listdir(full):
                os.rmdir(full)
            else:  # changed since tfcluster made it: left, and no longer tfcluster's (but a directory it made)
                kept.append(rel)
                if kind != "dir":
                    del self.entries[rel]
                continue
            del self.entries[rel]
        self.save()
        return kept

    def make_dirs(self, rels) -> None:
        """Makes directories (parents first), recording the ones tfcluster makes."""
        for rel in rels:
            self._may_replace(rel, "dir")
            if not os.path.isdir(self._full(rel)):
                self.entries[rel] = {"kind": "dir"}
        self.save()
        for rel in rels:
            os.makedirs(self._full(rel), exist_ok=True)

    def place(self, items) -> None:
        """Makes links and copies: items of (rel, source, "link" | "copy").

        All are checked and recorded in the manifest first (nothing at these paths that tfcluster did not
        write, unless overwrite), then made: a link relative to its folder, or a copy (metadata kept); a
        source may also be a function writing the copy to the path it is given.
        """
        items = list(items)
        for rel, _, kind in items:
            self._may_replace(rel, "file")
            self.entries[rel] = {"kind": kind}
        self.save()
        for rel, source, kind in items:
            full = self._full(rel)
            if os.path.lexists(full):
                os.unlink(full)
            if kind == "link":
                os.symlink(os.path.relpath(os.path.abspath(source), os.path.dirname(full)), full)
            elif callable(source):
                source(full)
            else:
                shutil.copy2(source, full)
                size, mtime = _stamp(full)
                self.entries[rel].update(size=size, mtime_ns=mtime)
        self.save()

    def clear_prefix(self, prefix: str) -> None:
        """`clear`s every top-level entry whose name starts with `prefix`."""
        for top in sorted({r.split("/")[0] for r in self.entries if r.startswith(prefix)}):
            self.clear(top)


def _safe_relative(rel) -> bool:
    """Whether `rel` is a plain relative path below the directory ("a/b", no "..", ".", "" or "/" start)."""
    return isinstance(rel, str) and bool(rel) and "\\" not in rel and "\x00" not in rel and \
        all(part not in ("", ".", "..") for part in rel.split("/"))


def _stamp(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    return int(st.st_size), int(st.st_mtime_ns)
