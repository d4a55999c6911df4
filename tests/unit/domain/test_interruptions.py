"""One rule for interrupted jobs, whoever finds them (restart or reaper)."""

import pytest

from strongroom.domain.interruptions import AfterInterruption, after_interruption
from strongroom.domain.model import JobKind


@pytest.mark.parametrize("kind", [JobKind.DELETE_BACKUP, JobKind.DELETE_INSTANCE])
def test_deletions_run_again(kind):
    assert after_interruption(kind) is AfterInterruption.RUN_AGAIN


@pytest.mark.parametrize("kind", [JobKind.BACKUP, JobKind.CREATE_INSTANCE])
def test_backups_and_instance_builds_fail(kind):
    assert after_interruption(kind) is AfterInterruption.FAIL


def test_every_kind_has_a_rule():
    assert {after_interruption(k) for k in JobKind} == set(AfterInterruption)
