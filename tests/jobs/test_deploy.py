"""Deploys: several instances run `salesbot migrate` at the same moment; both succeed, schema at head.

Two processes, as two deploys are (Alembic's `context` proxy is per process, not per thread). On
PostgreSQL the upgrade takes pg_advisory_xact_lock, so the second waits and then finds nothing to
do; on SQLite the migration transaction begins IMMEDIATE, which serialises them the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from service import migrate
from service.db import create_engine
from service.settings import Settings
from tests.jobs.helpers import ROOT, cli_environ


async def test_two_concurrent_upgrades_both_succeed_and_reach_head(settings: Settings, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE"))}
    env.update(cli_environ(settings), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "service", "migrate"]
    runs = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(run.wait(timeout=120), *run.communicate()) for run in runs]
    assert [status for status, _, _ in results] == [0, 0], [err[-500:] for _, _, err in results]
    engine = create_engine(settings.database_url)
    try:
        assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()
