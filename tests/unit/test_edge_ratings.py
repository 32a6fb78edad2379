import asyncio
import uuid

import grpc
import pytest

from edge.problems import HttpProblemError
from edge.ratings import RatingCache
from edge.routes import comments

P, Q, OTHER = (str(uuid.uuid4()) for _ in range(3))
A, B, C, D = (str(uuid.uuid4()) for _ in range(4))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(ttl: float = 5.0, max_entries: int = 10) -> tuple[RatingCache[str], Clock]:
    clock = Clock()
    return RatingCache[str](ttl, max_entries, clock=clock), clock


def test_an_answer_is_kept_for_ttl_counted_from_the_question() -> None:
    ratings, clock = cache(ttl=5)
    asked = clock()
    clock.now += 1  # the call took a second
    ratings.put(P, "4.5 stars", asked)
    assert ratings.get(P) == "4.5 stars"
    clock.now = asked + 4.9
    assert ratings.get(P) == "4.5 stars"
    clock.now = asked + 5
    assert ratings.get(P) is None
    assert ratings.get(OTHER) is None


def test_a_drop_forgets_the_product_and_refuses_answers_asked_before_it() -> None:
    ratings, clock = cache()
    ratings.put(P, "old", clock())
    ratings.put(Q, "kept", clock())
    clock.now += 0.1
    asked_before_the_write = clock()
    clock.now += 0.1
    ratings.drop(P)  # a review of P was written meanwhile
    clock.now += 0.1
    assert ratings.get(P) is None
    ratings.put(P, "maybe older than the review", asked_before_the_write)
    assert ratings.get(P) is None
    assert ratings.get(Q) == "kept"
    ratings.put(P, "new", clock())
    assert ratings.get(P) == "new"


def test_one_product_is_one_entry_however_its_id_is_spelled() -> None:
    ratings, clock = cache()
    asked = clock()
    ratings.put(P.upper(), "upper", asked)
    assert ratings.get(P) == "upper"
    assert ratings.get(P.replace("-", "")) == "upper"
    clock.now += 0.1
    ratings.drop(P)
    ratings.put(P.upper(), "asked before the drop", asked)
    assert ratings.get(P.upper()) is None


def test_an_id_that_is_not_a_uuid_is_never_kept() -> None:
    ratings, clock = cache()
    ratings.put("not-a-uuid", "x", clock())
    assert ratings.get("not-a-uuid") is None
    ratings.drop("not-a-uuid")  # harmless
    assert ratings._entries == {} and ratings._dropped == {}


def test_dropping_all_forgets_every_product() -> None:
    ratings, clock = cache()
    asked = clock()
    ratings.put(P, "a", asked)
    ratings.put(Q, "b", asked)
    clock.now += 0.1
    ratings.drop()
    assert (ratings.get(P), ratings.get(Q)) == (None, None)
    ratings.put(Q, "asked before the drop", asked)
    assert ratings.get(Q) is None


def test_the_least_recently_stored_goes_first_when_full() -> None:
    ratings, clock = cache(max_entries=2)
    for product, summary in ((A, "A"), (B, "B"), (C, "C")):
        ratings.put(product, summary, clock())
    assert [ratings.get(p) for p in (A, B, C)] == [None, "B", "C"]


def test_many_drops_stay_bounded_and_stay_safe() -> None:
    ratings, clock = cache(max_entries=3)
    asked = clock()
    clock.now += 0.1
    for product in (A, B, C, D):  # the fourth drop resets the bookkeeping to "all dropped"
        ratings.drop(product)
    assert len(ratings._dropped) <= 3
    ratings.put(A, "asked before its drop", asked)
    assert ratings.get(A) is None


def test_ttl_zero_keeps_nothing() -> None:
    ratings, clock = cache(ttl=0)
    ratings.put(P, "x", clock())
    assert ratings.get(P) is None


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RatingCache[str](-1)
    with pytest.raises(ValueError):
        RatingCache[str](5, max_entries=0)


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="from comment_svc")


@pytest.mark.parametrize(
    ("error", "maybe"),
    [
        (HttpProblemError(404, "no such comment"), False),  # refused: the cache may stay
        (HttpProblemError(403, "not your comment"), False),
        (rpc_error(grpc.StatusCode.PERMISSION_DENIED), False),
        (rpc_error(grpc.StatusCode.FAILED_PRECONDITION), False),
        (rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), True),  # the answer was lost
        (rpc_error(grpc.StatusCode.UNAVAILABLE), True),
        (rpc_error(grpc.StatusCode.CANCELLED), True),
        (rpc_error(grpc.StatusCode.INTERNAL), True),
        (rpc_error(grpc.StatusCode.DATA_LOSS), True),
        (rpc_error(grpc.StatusCode.UNKNOWN), True),
        (HttpProblemError(503, "comment_svc is unavailable"), True),
        (ConnectionResetError(), True),
        (asyncio.CancelledError(), True),
    ],
)
def test_only_a_write_that_may_have_happened_clears_the_cache(error: BaseException, maybe: bool) -> None:
    assert comments._maybe_written(error) is maybe
