"""Profile the in-process engine on the overhead workload (N tasks, stub latency 0).

    make profile-engine PROFILE_TASKS=50 PROFILE_OUT=/tmp/engine.txt

pyinstrument is not a project dependency: the make target runs this module with
`uv run --with pyinstrument`, which brings it for this command only.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from bench.common import Stub, sqlite_url, temp_workdir
from bench.s1_overhead import Measured, _engine_runs


def main() -> None:
    from pyinstrument import Profiler

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    workdir = temp_workdir()
    stub = Stub().start()
    try:

        class Ctx:
            def __init__(self) -> None:
                self.stub = stub
                self.workdir = workdir

        url = sqlite_url(workdir, "profile")
        m = Measured("engine", n, 0.0)
        profiler = Profiler(interval=0.0005, async_mode="enabled")
        profiler.start()
        asyncio.run(_engine_runs(url, m, 1, 3, Ctx()))  # type: ignore[arg-type]
        profiler.stop()
        text = (
            f"engine in-process, N={n}, stub latency 0: walls {[round(w, 3) for w in m.walls]} s,"
            f" overhead/task {m.overhead_ms:.2f} ms (under the profiler)\n\n"
            + profiler.output_text(unicode=False, color=False, show_all=False)
        )
        if out:
            out.write_text(text)
        print(text)
    finally:
        stub.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
