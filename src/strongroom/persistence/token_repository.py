"""SQL repository of API tokens. It never commits; the unit of work does."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from strongroom.domain.ports import TokenRecord
from strongroom.persistence.tables import TokenRow


class SqlTokenRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, record: TokenRecord) -> None:
        self._s.add(
            TokenRow(
                id=record.id,
                token_hash=record.token_hash,
                project_id=record.project_id,
                user_id=record.user_id,
                roles=",".join(record.roles),
                created=record.created,
                revoked=record.revoked,
            )
        )

    def find_by_hash(self, token_hash: str) -> TokenRecord | None:
        row = self._s.execute(
            select(TokenRow).where(TokenRow.token_hash == token_hash)
        ).scalar_one_or_none()
        return _token(row) if row is not None else None

    def list(self) -> list[TokenRecord]:
        rows = self._s.execute(select(TokenRow).order_by(TokenRow.created)).scalars()
        return [_token(r) for r in rows]

    def revoke(self, token_id: str, at: datetime) -> bool:
        row = self._s.get(TokenRow, token_id)
        if row is None or row.revoked is not None:
            return False
        row.revoked = at
        return True

    def count(self) -> int:
        return int(self._s.execute(select(func.count()).select_from(TokenRow)).scalar_one())


def _token(row: TokenRow) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        token_hash=row.token_hash,
        project_id=row.project_id,
        user_id=row.user_id,
        roles=tuple(r for r in row.roles.split(",") if r),
        created=row.created,
        revoked=row.revoked,
    )
