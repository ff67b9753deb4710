#!/usr/bin/env python3
"""kassa's layering rules, checked over src/ as text:

1. only the db driver files (`DRIVER`: src/db/mod.rs, sql.rs, backup.rs,
   checkpointer.rs, migrations.rs, writer.rs) name rusqlite;
2. only src/http, src/sandbox, main.rs and startup.rs name actix;
3. nothing in service, jobs, webhooks, providers, db, domain, core.rs or config.rs
   imports crate::http or crate::sandbox (the web surfaces sit on top);
4. no import circle between files;
5. every other file under src/db (new ones included) names neither rusqlite nor the
   connection inside a `Tx` (`.conn`): it runs every statement through
   `Tx::exec/one/opt/all/each` and reads rows through `sql::Row`, the one layer a
   second backend implements (issue 17). The files under src/db/pg/ (that backend's
   driver) may reach their own connection, and are still held to rule 1;
6. only the files under src/db/pg/ name the PostgreSQL driver crates (tokio_postgres,
   deadpool_postgres, postgres_types): the rest of db reaches PostgreSQL through the
   same `Tx` and `Row` as SQLite.

For 4, a file's imports are its `use` trees and the paths it names inline (`crate::…`,
`super::…`, `self::…`, and paths that start with one of its child modules), each
resolved to the file of the deepest module it names. A file that uses an item of its
own ancestor's mod.rs (a child using what its parent module defines) is not counted:
a directory module and the children it declares are one unit. Every other circle is
reported as the files that form it.

Exit status 1 when a rule is broken. `-v` also lists each file's imports; `--root DIR`
checks another checkout.
"""

import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[sys.argv.index("--root") + 1]).resolve() if "--root" in sys.argv else Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def module_of(path: Path) -> tuple:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts in (["lib"], ["main"]):
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def strip_comments_and_strings(text: str) -> str:
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif text[i] == '"' or (text[i] == "r" and re.match(r'r#*"', text[i:])):
            m = re.match(r'r(#*)"', text[i:])
            if m:
                end = '"' + m.group(1)
                j = text.find(end, i + len(m.group(0)))
                i = n if j < 0 else j + len(end)
            else:
                j = i + 1
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                i = j + 1
            out.append('""')
        elif text[i] == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            i += len(re.match(r"'(\\.|[^\\'])'", text[i:]).group(0))
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def use_paths(tree: str) -> list:
    """`a::{b, c::{d, self}}` -> [[a, b], [a, c, d], [a, c]]."""
    tree = tree.strip()
    if tree.startswith("{"):
        inner, depth, items, cur = tree[1:-1], 0, [], ""
        for ch in inner:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                items.append(cur)
                cur = ""
            else:
                cur += ch
        items.append(cur)
        return [p for item in items if item.strip() for p in use_paths(item)]
    head, sep, rest = tree.partition("::")
    head = head.split(" as ")[0].strip()
    if not sep:
        return [[head]] if head != "self" else [[]]
    return [[head] + p for p in use_paths(rest)]


# Rules 1 and 5: the files of src/db that may hold a driver (rusqlite today). Every
# other file, a new one included, is held to rule 5 without being listed.
DRIVER = {"mod.rs", "sql.rs", "backup.rs", "checkpointer.rs", "migrations.rs", "writer.rs"}


def is_driver(name: str) -> bool:
    return name.startswith("src/db/") and name[len("src/db/"):] in DRIVER


def is_pg_driver(name: str) -> bool:
    # The PostgreSQL driver (issue 17): its connection is its own, but not rusqlite.
    return name.startswith("src/db/pg/")


def main() -> int:
    verbose = "-v" in sys.argv
    files = sorted(SRC.rglob("*.rs"))
    modules = {module_of(f): f for f in files if f.name != "main.rs"}
    problems = []

    texts = {f: strip_comments_and_strings(f.read_text()) for f in files}
    rel = {f: str(f.relative_to(ROOT)) for f in files}

    # Rules 1 to 3.
    surfaces = ("src/http/", "src/sandbox/", "src/main.rs", "src/startup.rs")
    below = ("src/service/", "src/jobs/", "src/webhooks/", "src/providers/", "src/db/",
             "src/domain/", "src/core.rs", "src/config.rs")
    for f in files:
        name, text = rel[f], texts[f]
        if re.search(r"\brusqlite\b", text) and not is_driver(name):
            problems.append(f"{name}: names rusqlite outside the db driver files (DRIVER)")
        if re.search(r"\bactix(_web|_http|_server)?\b", text) and not name.startswith(surfaces):
            problems.append(f"{name}: names actix outside the web surfaces")
        if name.startswith(below) and re.search(r"\bcrate::(http|sandbox|state)\b", text):
            problems.append(f"{name}: imports a web surface (crate::http / crate::sandbox / crate::state)")

    # Rule 6.
    for f in files:
        name = rel[f]
        if re.search(r"\b(tokio_postgres|deadpool_postgres|postgres_types)\b", texts[f]) and not name.startswith("src/db/pg/"):
            problems.append(f"{name}: names a PostgreSQL driver crate outside src/db/pg/")

    # Rule 5 (rusqlite itself is rule 1).
    for f in files:
        name = rel[f]
        if name.startswith("src/db/") and not is_driver(name) and not is_pg_driver(name) \
                and re.search(r"\.conn\b", texts[f]):
            problems.append(f"{name}: reaches the connection inside Tx, but it runs its statements through db::sql")

    # Rule 4.
    def resolve(path: list, here: tuple):
        if not path:
            return None
        if path[0] == "crate" or path[0] == "kassa":
            segs = path[1:]
        elif path[0] == "super":
            segs, up = path, here
            while segs and segs[0] == "super":
                up, segs = up[:-1], segs[1:]
            segs = list(up) + segs
        elif path[0] == "self":
            segs = list(here) + path[1:]
        elif here + (path[0],) in modules:
            segs = list(here) + path
        else:
            return None
        best = None
        for k in range(len(segs), -1, -1):
            if tuple(segs[:k]) in modules:
                best = tuple(segs[:k])
                break
        return best

    edges = {f: set() for f in files}
    for f in files:
        here = module_of(f)
        text = texts[f]
        found = []
        for m in re.finditer(r"\buse\s+([^;]+);", text):
            found += use_paths(m.group(1))
        for m in re.finditer(r"\b(crate|super|self|kassa)((?:::\w+)+)", text):
            found.append([m.group(1)] + m.group(2).split("::")[1:])
        # Inline paths that start with a child module (`alipay::gateway::handle`).
        for m in re.finditer(r"(?<![\w:])([a-z_][a-z0-9_]*)((?:::\w+)+)", text):
            if here + (m.group(1),) in modules:
                found.append([m.group(1)] + m.group(2).split("::")[1:])
        for path in found:
            target = resolve(path, here)
            if target is None or target not in modules:
                continue
            dest = modules[target]
            if dest == f:
                continue
            # A child using its own ancestor's items: one unit (see the module docs).
            if dest.name in ("mod.rs", "lib.rs") and here[: len(target)] == target:
                continue
            edges[f].add(dest)

    if verbose:
        for f in files:
            for d in sorted(edges[f]):
                print(f"{rel[f]} -> {rel[d]}")

    # Strongly connected components (Tarjan): each with more than one file is a circle.
    index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(rel[c] for c in comp))

    sys.setrecursionlimit(10000)
    for v in files:
        if v not in index:
            visit(v)
    for comp in sccs:
        problems.append("import circle: " + " <-> ".join(comp))

    n_edges = sum(len(e) for e in edges.values())
    print(f"layering: {len(files)} files, {n_edges} file-to-file imports, {len(sccs)} import circles")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
