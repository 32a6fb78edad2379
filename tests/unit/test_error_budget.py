"""The status budget rule: what fits in gRPC's trailing metadata is kept, the rest counted."""

from __future__ import annotations

from google.rpc import error_details_pb2, status_pb2

from common.errors import MAX_MESSAGE_CHARS, MAX_STATUS_BYTES, OMITTED_VIOLATIONS, FieldViolation, InvalidArgumentError


def _unpack(status: status_pb2.Status) -> tuple[error_details_pb2.BadRequest, error_details_pb2.ErrorInfo]:
    bad, info = error_details_pb2.BadRequest(), error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
        elif detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
    return bad, info


def test_a_small_error_is_kept_whole() -> None:
    error = InvalidArgumentError("invalid a", [FieldViolation("a", "is required")], reason="VALIDATION_FAILED")
    bad, info = _unpack(error.to_status())
    assert [(v.field, v.description) for v in bad.field_violations] == [("a", "is required")]
    assert OMITTED_VIOLATIONS not in info.metadata


def test_violations_past_the_budget_are_left_out_and_counted_in_order() -> None:
    violations = [FieldViolation(f"items[{n}].quantity", "must be between 1 and 100") for n in range(500)]
    status = InvalidArgumentError("invalid items", violations, reason="VALIDATION_FAILED").to_status()
    assert status.ByteSize() <= MAX_STATUS_BYTES
    bad, info = _unpack(status)
    kept = len(bad.field_violations)
    assert 0 < kept < 500
    assert [v.field for v in bad.field_violations] == [f"items[{n}].quantity" for n in range(kept)]
    assert int(info.metadata[OMITTED_VIOLATIONS]) == 500 - kept
    assert info.reason == "VALIDATION_FAILED"


def test_a_huge_message_or_description_is_clipped() -> None:
    error = InvalidArgumentError("x" * 100_000, [FieldViolation("f", "y" * 100_000)])
    status = error.to_status()
    assert status.ByteSize() <= MAX_STATUS_BYTES
    assert len(status.message) == MAX_MESSAGE_CHARS and status.message.endswith("…")
