"""Fail when two modules of rxws import each other, directly or through others.

The package's ``__init__`` modules are left out: they re-export what lies below them.
"""

from __future__ import annotations

import sys

import grimp


def main() -> int:
    graph = grimp.build_graph("rxws")
    modules = sorted(m for m in graph.modules if not graph.find_children(m))
    cycles = []
    for i, a in enumerate(modules):
        for b in modules[i + 1 :]:
            there = graph.find_shortest_chain(importer=a, imported=b)
            back = graph.find_shortest_chain(importer=b, imported=a) if there else None
            if there and back:
                cycles.append(" -> ".join(there) + " -> ... -> " + a)
    for cycle in cycles:
        print(f"import cycle: {cycle}")
    print(f"no_cycles: {len(modules)} modules, {len(cycles)} cycle(s)")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
