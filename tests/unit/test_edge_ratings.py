import pytest

from edge.ratings import RatingCache


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
    ratings.put("p", "4.5 stars", asked)
    assert ratings.get("p") == "4.5 stars"
    clock.now = asked + 4.9
    assert ratings.get("p") == "4.5 stars"
    clock.now = asked + 5
    assert ratings.get("p") is None
    assert ratings.get("other") is None


def test_a_drop_forgets_the_product_and_refuses_answers_asked_before_it() -> None:
    ratings, clock = cache()
    ratings.put("p", "old", clock())
    ratings.put("q", "kept", clock())
    clock.now += 0.1
    asked_before_the_write = clock()
    clock.now += 0.1
    ratings.drop("p")  # a review of p was written meanwhile
    clock.now += 0.1
    assert ratings.get("p") is None
    ratings.put("p", "maybe older than the review", asked_before_the_write)
    assert ratings.get("p") is None
    assert ratings.get("q") == "kept"
    ratings.put("p", "new", clock())
    assert ratings.get("p") == "new"


def test_dropping_all_forgets_every_product() -> None:
    ratings, clock = cache()
    asked = clock()
    ratings.put("p", "a", asked)
    ratings.put("q", "b", asked)
    clock.now += 0.1
    ratings.drop()
    assert (ratings.get("p"), ratings.get("q")) == (None, None)
    ratings.put("q", "asked before the drop", asked)
    assert ratings.get("q") is None


def test_the_least_recently_stored_goes_first_when_full() -> None:
    ratings, clock = cache(max_entries=2)
    for product in ("a", "b", "c"):
        ratings.put(product, product.upper(), clock())
    assert [ratings.get(p) for p in "abc"] == [None, "B", "C"]


def test_many_drops_stay_bounded_and_stay_safe() -> None:
    ratings, clock = cache(max_entries=3)
    asked = clock()
    clock.now += 0.1
    for product in ("a", "b", "c", "d"):  # the fourth drop resets the bookkeeping to "all dropped"
        ratings.drop(product)
    assert len(ratings._dropped) <= 3
    ratings.put("a", "asked before its drop", asked)
    assert ratings.get("a") is None


def test_ttl_zero_keeps_nothing() -> None:
    ratings, clock = cache(ttl=0)
    ratings.put("p", "x", clock())
    assert ratings.get("p") is None


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RatingCache[str](-1)
    with pytest.raises(ValueError):
        RatingCache[str](5, max_entries=0)
