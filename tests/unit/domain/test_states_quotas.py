import pytest

from strongroom.domain.errors import InvalidStateError, QuotaExceededError
from strongroom.domain.model import BackupState
from strongroom.domain.quotas import UNLIMITED, check_quota, release
from strongroom.domain.states import check_transition


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (BackupState.NEW, BackupState.BUILDING),
        (BackupState.BUILDING, BackupState.COMPLETED),
        (BackupState.BUILDING, BackupState.FAILED),
        (BackupState.COMPLETED, BackupState.DELETING),
        (BackupState.DELETING, BackupState.DELETE_FAILED),
    ],
)
def test_allowed_transitions(current, target):
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (BackupState.COMPLETED, BackupState.BUILDING),
        (BackupState.FAILED, BackupState.COMPLETED),
        (BackupState.RESTORED, BackupState.NEW),
        (BackupState.NEW, BackupState.COMPLETED),
    ],
)
def test_refused_transitions(current, target):
    with pytest.raises(InvalidStateError):
        check_transition(current, target)


def test_quota_message_is_trove_shaped():
    with pytest.raises(QuotaExceededError) as err:
        check_quota(resource="backups", in_use=50, limit=50)
    assert str(err.value) == "Quota exceeded for resources: ['backups']."


def test_quota_allows_up_to_limit_and_unlimited():
    check_quota(resource="backups", in_use=49, limit=50)
    check_quota(resource="backups", in_use=10**6, limit=UNLIMITED)


def test_release_floors_at_zero():
    assert release(2, 3) == 0
    assert release(5, 3) == 2
