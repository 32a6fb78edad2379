"""comment_svc as a real process (``python -m comment_svc``) on real PostgreSQL
and Kafka, with the real product_svc (and order_svc for the verified mark),
called over gRPC with tokens signed by the cluster's key.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import grpc
import psycopg
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from shop.comment.v1 import comment_pb2, comment_pb2_grpc
from shop.common.v1 import paging_pb2

from common.errors import Problem, problem_from_rpc_error
from devstack.cluster import Cluster
from devstack.paths import REPO
from devstack.process import Process, free_port
from devstack.servers import Kafka, Postgres
from tests.comment_helpers import Caller, caller, comment_events, create_product, order_and_deliver
from tests.schema_helpers import schema_drift

UPGRADE = "alembic -c migrations/comment/alembic.ini upgrade head"
ORDER_SVC_BUILT = (REPO / "order_svc" / "__main__.py").exists()

if TYPE_CHECKING:
    Stub = comment_pb2_grpc.CommentServiceAsyncStub
else:
    Stub = comment_pb2_grpc.CommentServiceStub


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(services: Callable[..., Cluster]) -> Cluster:
    """comment_svc and the services it asks: product_svc, user_svc (display
    names) and order_svc (the verified mark) when it is built."""
    return services("user_svc", "product_svc", *(["order_svc"] if ORDER_SVC_BUILT else []), "comment_svc")


@pytest.fixture(scope="module")
async def stub(stack: Cluster) -> AsyncIterator[Stub]:
    async with stack.channel("comment_svc") as channel:
        yield comment_pb2_grpc.CommentServiceStub(channel)


@pytest.fixture(scope="module")
def admin(stack: Cluster) -> Caller:
    return caller(stack, "admin")


@pytest.fixture
def ann(stack: Cluster) -> Caller:
    return caller(stack)


@pytest.fixture
def bob(stack: Cluster) -> Caller:
    return caller(stack)


@pytest.fixture
async def product(stack: Cluster, admin: Caller) -> str:
    return await create_product(stack, admin)


# --- helpers -------------------------------------------------------------------------------------


async def fails(call: object) -> tuple[grpc.StatusCode, Problem]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code(), problem_from_rpc_error(raised.value)


async def post(
    stub: Stub,
    who: Caller,
    product_id: str,
    body: str = "Nice",
    *,
    rating: int | None = None,
    parent: str | None = None,
) -> comment_pb2.Comment:
    reply = await stub.CreateComment(
        comment_pb2.CreateCommentRequest(product_id=product_id, body=body, rating=rating, parent_id=parent),
        metadata=who.metadata,
    )
    return reply.comment


async def get(stub: Stub, comment_id: str, who: Caller | None = None) -> comment_pb2.Comment:
    metadata = who.metadata if who else ()
    return (await stub.GetComment(comment_pb2.GetCommentRequest(comment_id=comment_id), metadata=metadata)).comment


async def summary(stub: Stub, product_id: str) -> tuple[int, int, float, list[int]]:
    found = (await stub.GetRatingSummary(comment_pb2.GetRatingSummaryRequest(product_id=product_id))).summary
    assert [bucket.rating for bucket in found.histogram] == [1, 2, 3, 4, 5]
    return found.count, found.sum, found.average, [bucket.count for bucket in found.histogram]


async def all_pages(
    stub: Stub, product_id: str, sort: int, size: int, between: Callable[[], object] | None = None
) -> list[comment_pb2.Comment]:
    seen: list[comment_pb2.Comment] = []
    token = ""
    for _ in range(100):
        page = await stub.ListComments(
            comment_pb2.ListCommentsRequest(
                product_id=product_id,
                sort=sort,  # type: ignore[arg-type]
                page=paging_pb2.PageRequest(page_size=size, page_token=token),
            )
        )
        assert len(page.comments) <= size
        seen += page.comments
        token = page.page.next_page_token
        if not token:
            return seen
        if between is not None:
            await between()  # type: ignore[misc]
    raise AssertionError("paging did not end")


# --- threads --------------------------------------------------------------------------------------


async def test_reviews_and_threaded_replies(stub: Stub, ann: Caller, bob: Caller, product: str, stack: Cluster) -> None:
    review = await post(stub, ann, product, "  Solid kettle.\r\nBoils fast.\t ", rating=5)
    assert review.body == "Solid kettle.\nBoils fast."
    assert review.rating == 5 and not review.HasField("parent_id")
    assert review.author_id == ann.user_id and review.reply_count == 0 and not review.edited

    first = await post(stub, bob, product, "Is it loud?", parent=review.id)
    second = await post(stub, ann, product, "Not at all.", parent=review.id)
    nested = await post(stub, bob, product, "Thanks!", parent=second.id)
    assert first.parent_id == review.id and nested.parent_id == second.id
    assert not first.HasField("rating")

    listed = await stub.ListComments(comment_pb2.ListCommentsRequest(product_id=product))
    assert [c.id for c in listed.comments] == [review.id]  # replies are grouped, not listed at the top
    top = listed.comments[0]
    assert top.reply_count == 2
    assert [r.id for r in top.replies] == [first.id, second.id]  # oldest first
    assert top.replies[1].reply_count == 1 and not top.replies[1].replies

    deeper = await stub.ListComments(comment_pb2.ListCommentsRequest(product_id=product, parent_id=second.id))
    assert [c.id for c in deeper.comments] == [nested.id]

    # Replies carry no rating; a parent must exist on the same product.
    code, problem = await fails(post(stub, bob, product, "5 stars from me", rating=5, parent=review.id))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and [e.field for e in problem.errors] == ["rating"]
    code, _ = await fails(post(stub, bob, product, "hello?", parent=str(uuid.uuid4())))
    assert code == grpc.StatusCode.NOT_FOUND
    other = await create_product(stack, caller(stack, "admin"))
    code, _ = await fails(post(stub, bob, other, "wrong thread", parent=review.id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, _ = await fails(stub.ListComments(comment_pb2.ListCommentsRequest(product_id=other, parent_id=review.id)))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_reply_limit_groups_the_first_replies(stub: Stub, ann: Caller, bob: Caller, product: str) -> None:
    review = await post(stub, ann, product, "Many answers below", rating=3)
    replies = [await post(stub, bob, product, f"reply {n}", parent=review.id) for n in range(5)]
    default = await stub.ListComments(comment_pb2.ListCommentsRequest(product_id=product))
    assert [r.id for r in default.comments[0].replies] == [r.id for r in replies[:3]]
    more = await stub.ListComments(comment_pb2.ListCommentsRequest(product_id=product, reply_limit=4))
    assert [r.id for r in more.comments[0].replies] == [r.id for r in replies[:4]]
    rest: list[str] = []
    token = ""
    while True:
        page = await stub.ListComments(
            comment_pb2.ListCommentsRequest(
                product_id=product, parent_id=review.id, page=paging_pb2.PageRequest(page_size=2, page_token=token)
            )
        )
        rest += [c.id for c in page.comments]
        token = page.page.next_page_token
        if not token:
            break
    assert rest == [r.id for r in replies]


# --- paging ---------------------------------------------------------------------------------------


async def test_paging_newest_first_without_duplicates_or_gaps(stub: Stub, ann: Caller, product: str) -> None:
    written = [(await post(stub, ann, product, f"comment {n}")).id for n in range(23)]
    added: list[str] = []

    async def another() -> None:
        added.append((await post(stub, ann, product, f"late {len(added)}")).id)

    seen = [c.id for c in await all_pages(stub, product, comment_pb2.COMMENT_SORT_NEWEST, 5, another)]
    # Everything that existed at the first page, newest first, once each; the
    # comments added while paging are newer than the first page and not in it.
    assert seen == list(reversed(written))
    again = [c.id for c in await all_pages(stub, product, comment_pb2.COMMENT_SORT_UNSPECIFIED, 100)]
    assert again == list(reversed(written + added))


async def test_paging_most_liked_first(stub: Stub, stack: Cluster, ann: Caller, product: str) -> None:
    ids = [(await post(stub, ann, product, f"opinion {n}")).id for n in range(9)]
    likes = {ids[2]: 4, ids[7]: 2, ids[0]: 2, ids[5]: 1}
    for comment_id, count in likes.items():
        for _ in range(count):
            like = comment_pb2.LikeCommentRequest(comment_id=comment_id)
            await stub.LikeComment(like, metadata=caller(stack).metadata)
    seen = await all_pages(stub, product, comment_pb2.COMMENT_SORT_MOST_LIKED, 2)
    # Most liked first; equal counts newest first.
    expected = [ids[2], ids[7], ids[0], ids[5]] + [i for i in reversed(ids) if i not in likes]
    assert [c.id for c in seen] == expected
    assert [c.like_count for c in seen[:4]] == [4, 2, 2, 1]

    first = await stub.ListComments(
        comment_pb2.ListCommentsRequest(
            product_id=product, sort=comment_pb2.COMMENT_SORT_MOST_LIKED, page=paging_pb2.PageRequest(page_size=2)
        )
    )
    # A token only works for the list it came from.
    code, problem = await fails(
        stub.ListComments(
            comment_pb2.ListCommentsRequest(
                product_id=product, page=paging_pb2.PageRequest(page_token=first.page.next_page_token)
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and problem.errors[0].field == "page.page_token"
    code, _ = await fails(
        stub.ListComments(
            comment_pb2.ListCommentsRequest(product_id=product, page=paging_pb2.PageRequest(page_size=-1))
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# --- edit and delete rights -------------------------------------------------------------------


async def test_only_the_author_edits(stub: Stub, ann: Caller, bob: Caller, admin: Caller, product: str) -> None:
    review = await post(stub, ann, product, "Okay-ish", rating=3)
    edit = comment_pb2.UpdateCommentRequest(
        comment_id=review.id, body=" Better after a week ", rating=4, update_mask=FieldMask(paths=["body", "rating"])
    )
    for intruder in (bob, admin):
        code, problem = await fails(stub.UpdateComment(edit, metadata=intruder.metadata))
        assert code == grpc.StatusCode.PERMISSION_DENIED and problem.reason == "NOT_OWNER"
    assert (await get(stub, review.id)).body == "Okay-ish"

    edited = (await stub.UpdateComment(edit, metadata=ann.metadata)).comment
    assert edited.body == "Better after a week" and edited.rating == 4
    assert edited.edited and edited.HasField("edited_at")
    assert edited.edited_at.ToDatetime() >= edited.created_at.ToDatetime()
    fresh = await post(stub, ann, product, "untouched")
    same = await stub.UpdateComment(
        comment_pb2.UpdateCommentRequest(comment_id=fresh.id, body="untouched", update_mask=FieldMask(paths=["body"])),
        metadata=ann.metadata,
    )
    assert not same.comment.edited  # nothing changed, nothing marked

    code, _ = await fails(
        stub.UpdateComment(comment_pb2.UpdateCommentRequest(comment_id=review.id, body="x"), metadata=ann.metadata)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # empty mask
    missing = comment_pb2.UpdateCommentRequest(
        comment_id=str(uuid.uuid4()), body="x", update_mask=FieldMask(paths=["body"])
    )
    code, _ = await fails(stub.UpdateComment(missing, metadata=ann.metadata))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = await fails(stub.UpdateComment(edit))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_delete_rights_and_removed_placeholders(
    stub: Stub, ann: Caller, bob: Caller, admin: Caller, product: str
) -> None:
    review = await post(stub, ann, product, "Broke after a day", rating=1)
    reply = await post(stub, bob, product, "Mine too", parent=review.id)
    lonely = await post(stub, bob, product, "Just a remark")

    delete = comment_pb2.DeleteCommentRequest
    code, problem = await fails(stub.DeleteComment(delete(comment_id=review.id), metadata=bob.metadata))
    assert code == grpc.StatusCode.PERMISSION_DENIED and problem.reason == "NOT_OWNER"

    # Without replies a comment disappears.
    await stub.DeleteComment(delete(comment_id=lonely.id), metadata=bob.metadata)
    code, _ = await fails(get(stub, lonely.id))
    assert code == grpc.StatusCode.NOT_FOUND

    # With replies it stays as a removed placeholder; an admin may delete anyone's.
    await stub.DeleteComment(delete(comment_id=review.id), metadata=admin.metadata)
    await stub.DeleteComment(delete(comment_id=review.id), metadata=ann.metadata)  # idempotent
    placeholder = await get(stub, review.id)
    assert placeholder.deleted and placeholder.body == "" and placeholder.author_id == ""
    assert not placeholder.HasField("rating") and placeholder.reply_count == 1
    listed = await stub.ListComments(comment_pb2.ListCommentsRequest(product_id=product))
    assert [c.id for c in listed.comments] == [review.id]
    assert [r.id for r in listed.comments[0].replies] == [reply.id]

    code, _ = await fails(post(stub, bob, product, "anyone?", parent=review.id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, _ = await fails(stub.LikeComment(comment_pb2.LikeCommentRequest(comment_id=review.id), metadata=bob.metadata))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    edit = comment_pb2.UpdateCommentRequest(comment_id=review.id, body="back", update_mask=FieldMask(paths=["body"]))
    code, _ = await fails(stub.UpdateComment(edit, metadata=ann.metadata))
    assert code == grpc.StatusCode.FAILED_PRECONDITION

    # The last reply of a placeholder gone: the placeholder has nothing left to hold.
    await stub.DeleteComment(delete(comment_id=reply.id), metadata=bob.metadata)
    for gone in (reply.id, review.id):
        code, _ = await fails(get(stub, gone))
        assert code == grpc.StatusCode.NOT_FOUND
    assert not (await stub.ListComments(comment_pb2.ListCommentsRequest(product_id=product))).comments


# --- ratings ----------------------------------------------------------------------------------------


async def test_rating_summary_through_create_edit_delete(
    stub: Stub, stack: Cluster, ann: Caller, admin: Caller, product: str
) -> None:
    assert await summary(stub, product) == (0, 0, 0.0, [0, 0, 0, 0, 0])
    people = [caller(stack) for _ in range(5)]
    ratings = [5, 4, 4, 1, 2]
    reviews = [await post(stub, who, product, "rated", rating=r) for who, r in zip(people, ratings, strict=True)]
    await post(stub, ann, product, "no stars from me")
    await post(stub, ann, product, "a reply", parent=reviews[0].id)
    assert await summary(stub, product) == (5, 16, 3.2, [1, 1, 0, 2, 1])

    change = comment_pb2.UpdateCommentRequest
    await stub.UpdateComment(
        change(comment_id=reviews[3].id, rating=3, update_mask=FieldMask(paths=["rating"])), metadata=people[3].metadata
    )
    assert await summary(stub, product) == (5, 18, 3.6, [0, 1, 1, 2, 1])
    await stub.UpdateComment(  # rating removed
        change(comment_id=reviews[4].id, update_mask=FieldMask(paths=["rating"])), metadata=people[4].metadata
    )
    assert await summary(stub, product) == (4, 16, 4.0, [0, 0, 1, 2, 1])
    await stub.UpdateComment(  # body only: rating kept
        change(comment_id=reviews[1].id, body="still 4", update_mask=FieldMask(paths=["body"])),
        metadata=people[1].metadata,
    )
    assert await summary(stub, product) == (4, 16, 4.0, [0, 0, 1, 2, 1])

    # Deleted: as a placeholder (it has a reply) and for good; both leave the summary.
    await stub.DeleteComment(comment_pb2.DeleteCommentRequest(comment_id=reviews[0].id), metadata=admin.metadata)
    await stub.DeleteComment(comment_pb2.DeleteCommentRequest(comment_id=reviews[2].id), metadata=people[2].metadata)
    assert await summary(stub, product) == (2, 7, 3.5, [0, 0, 1, 1, 0])

    unrated = str(uuid.uuid4())
    batch = await stub.BatchGetRatingSummaries(
        comment_pb2.BatchGetRatingSummariesRequest(product_ids=[unrated, product, unrated])
    )
    assert [(s.product_id, s.count, s.sum) for s in batch.summaries] == [(unrated, 0, 0), (product, 2, 7)]
    code, problem = await fails(
        stub.BatchGetRatingSummaries(comment_pb2.BatchGetRatingSummariesRequest(product_ids=[product, "x"]))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and problem.errors[0].field == "product_ids[1]"


# --- bad input and missing products -----------------------------------------------------------------


async def test_comment_on_a_missing_product_is_not_found(stub: Stub, ann: Caller) -> None:
    missing = str(uuid.uuid4())
    code, _ = await fails(post(stub, ann, missing, "Where is it?", rating=4))
    assert code == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListComments(comment_pb2.ListCommentsRequest(product_id=missing))
    assert not listed.comments
    assert await summary(stub, missing) == (0, 0, 0.0, [0, 0, 0, 0, 0])


@pytest.mark.parametrize("rating", [0, 6, -3])
async def test_invalid_rating_is_refused(stub: Stub, ann: Caller, product: str, rating: int) -> None:
    code, problem = await fails(post(stub, ann, product, "rating out of range", rating=rating))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [e.field for e in problem.errors] == ["rating"] and problem.reason == "VALIDATION_FAILED"
    assert not (await stub.ListComments(comment_pb2.ListCommentsRequest(product_id=product))).comments


@pytest.mark.parametrize(
    ("body", "reason"),
    [("", "required"), (" \n\t ", "required"), ("x" * 5001, "5000"), ("bell\x07", "control"), ("nul\x00", "control")],
)
async def test_invalid_bodies_are_refused(stub: Stub, ann: Caller, product: str, body: str, reason: str) -> None:
    code, problem = await fails(post(stub, ann, product, body))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert problem.errors[0].field == "body" and reason in problem.errors[0].description


async def test_bodies_at_the_limits_are_kept(stub: Stub, ann: Caller, product: str) -> None:
    longest = await post(stub, ann, product, "  " + "ü" * 5000 + "\n")
    assert longest.body == "ü" * 5000
    assert (await post(stub, ann, product, "a")).body == "a"


async def test_writes_need_a_token_and_bad_ids_are_refused(stub: Stub, ann: Caller, product: str) -> None:
    code, _ = await fails(stub.CreateComment(comment_pb2.CreateCommentRequest(product_id=product, body="anon")))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, problem = await fails(post(stub, ann, "not-a-uuid", "hi"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and problem.errors[0].field == "product_id"
    code, _ = await fails(stub.GetComment(comment_pb2.GetCommentRequest(comment_id="nope")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# --- likes -------------------------------------------------------------------------------------------


async def test_concurrent_likes_are_counted_exactly(
    stub: Stub, stack: Cluster, kafka: Kafka, ann: Caller, product: str
) -> None:
    review = await post(stub, ann, product, "Like me", rating=5)
    likers = [caller(stack) for _ in range(30)]
    request = comment_pb2.LikeCommentRequest(comment_id=review.id)
    # 30 users, each liking three times, all at once.
    replies = await asyncio.gather(
        *(stub.LikeComment(request, metadata=who.metadata) for who in likers for _ in range(3))
    )
    assert all(reply.liked_by_me for reply in replies)
    assert max(reply.like_count for reply in replies) == 30
    assert (await get(stub, review.id)).like_count == 30
    assert (await get(stub, review.id, likers[0])).liked_by_me
    assert not (await get(stub, review.id, ann)).liked_by_me
    assert not (await get(stub, review.id)).liked_by_me  # anonymous

    # Ten of them unlike, twice each, at once; and one likes again.
    unlike = comment_pb2.UnlikeCommentRequest(comment_id=review.id)
    await asyncio.gather(*(stub.UnlikeComment(unlike, metadata=who.metadata) for who in likers[:10] for _ in range(2)))
    assert (await get(stub, review.id)).like_count == 20
    again = await stub.LikeComment(request, metadata=likers[0].metadata)
    assert again.like_count == 21 and again.liked_by_me
    none = await stub.UnlikeComment(unlike, metadata=ann.metadata)  # never liked: nothing changes
    assert none.like_count == 21 and not none.liked_by_me

    code, _ = await fails(
        stub.LikeComment(comment_pb2.LikeCommentRequest(comment_id=str(uuid.uuid4())), metadata=ann.metadata)
    )
    assert code == grpc.StatusCode.NOT_FOUND

    # Kafka: one CommentLiked per new like (31), none for the repeats.
    # The likes were counted one after the other: the counts they carry are 1..30, then 21.
    found = await comment_events(kafka, {review.id}, 32)
    liked = [e for e in found if e.event_type == "CommentLiked"]
    assert len(liked) == 31 and len({e.event_id for e in liked}) == 31
    assert sorted(e.payload.like_count for e in liked) == sorted([*range(1, 31), 21])
    assert {e.payload.comment_author_id for e in liked} == {ann.user_id}
    assert {e.payload.liker_id for e in liked[:30]} == {who.user_id for who in likers}


# --- events ---------------------------------------------------------------------------------------


async def test_events_are_published_to_kafka(stub: Stub, kafka: Kafka, ann: Caller, bob: Caller, product: str) -> None:
    review = await post(stub, ann, product, "Review with events", rating=4)
    reply = await post(stub, bob, product, "A question " + "?" * 300, parent=review.id)
    own = await post(stub, ann, product, "Answering myself", parent=review.id)
    liked = await stub.LikeComment(comment_pb2.LikeCommentRequest(comment_id=review.id), metadata=bob.metadata)
    assert liked.like_count == 1

    keys = {review.id, reply.id, own.id}
    found = await comment_events(kafka, keys, 5)
    by_type: dict[str, list] = {}
    for event in found:
        by_type.setdefault(event.event_type, []).append(event)
    counts = sorted((kind, len(found)) for kind, found in by_type.items())
    assert counts == [("CommentCreated", 3), ("CommentLiked", 1), ("CommentReplied", 1)]

    created = {e.key: e.payload for e in by_type["CommentCreated"]}
    assert created[review.id].rating == 4 and not created[review.id].HasField("parent_id")
    assert created[review.id].author_id == ann.user_id and created[review.id].product_id == product
    assert created[reply.id].parent_id == review.id and not created[reply.id].HasField("rating")
    assert created[review.id].committed_at.seconds > 0

    [replied] = by_type["CommentReplied"]  # none for the author answering their own review
    assert replied.key == reply.id
    assert replied.payload.parent_author_id == ann.user_id and replied.payload.author_id == bob.user_id
    assert replied.payload.parent_id == review.id and len(replied.payload.body_excerpt) == 200

    [like] = by_type["CommentLiked"]
    assert like.key == review.id
    assert like.payload.liker_id == bob.user_id and like.payload.comment_author_id == ann.user_id
    assert like.payload.like_count == 1


# --- the verified-purchase mark -------------------------------------------------------------------


@pytest.mark.skipif(not ORDER_SVC_BUILT, reason="order_svc is not built yet (no order_svc/__main__.py)")
async def test_verified_only_after_a_delivered_order(stack: Cluster, stub: Stub, admin: Caller, product: str) -> None:
    cluster = stack
    buyer, browser = caller(cluster), caller(cluster)
    before = await post(stub, buyer, product, "Ordered it, waiting", rating=4)
    assert not before.verified_purchase
    await order_and_deliver(cluster, buyer, admin, product)
    after = await post(stub, buyer, product, "Arrived, as described", rating=5)
    assert after.verified_purchase
    assert not (await post(stub, browser, product, "Never bought it", rating=1)).verified_purchase
    reply = await post(stub, buyer, product, "replying", parent=after.id)
    assert not reply.verified_purchase  # the mark is for reviews
    assert not (await get(stub, before.id)).verified_purchase  # given when posting, not later


# --- a private instance: dependencies down, start-up checks -----------------------------------------


def private_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    """The shared comment_svc's environment, without its metrics port (taken)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOP_")}
    return {**env, **cluster.service_env_for("comment_svc"), "SHOP_METRICS_PORT": "0", **extra}


@pytest.fixture
def private(stack: Cluster) -> Iterator[Callable[..., str]]:
    """Start comment_svc instances of this test's own, on the shared database
    (``start(...)`` returns the address; ``start.processes`` the processes)."""
    started: list[Process] = []

    def start(**extra: str) -> str:
        port = free_port()
        process = Process(
            f"comment_svc-private-{len(started)}",
            [sys.executable, "-m", "comment_svc"],
            stack.root / "logs" / f"comment_svc-private-{uuid.uuid4().hex[:6]}.log",
            env=private_env(stack, SHOP_PORT=str(port), **extra),
            cwd=REPO,
        ).start()
        started.append(process)

        process.wait_ready(lambda: stack.grpc_serving(f"127.0.0.1:{port}"), 30)
        return f"127.0.0.1:{port}"

    start.processes = started  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for process in started:
            process.stop()


async def test_product_svc_down_is_unavailable_and_order_svc_down_is_not_verified(
    private: Callable[..., str], stack: Cluster, ann: Caller, product: str
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    no_catalog = await asyncio.to_thread(private, SHOP_PRODUCT_SVC_ADDR=nowhere, SHOP_UPSTREAM_TIMEOUT="1.5")
    async with stack.channel(no_catalog) as channel:
        down: Stub = comment_pb2_grpc.CommentServiceStub(channel)
        code, problem = await fails(post(down, ann, product, "Can anyone hear me?", rating=3))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert problem.reason == "DEPENDENCY_UNAVAILABLE" and problem.extra["dependency"] == "product_svc"
        assert not (await down.ListComments(comment_pb2.ListCommentsRequest(product_id=product))).comments

    no_orders = await asyncio.to_thread(private, SHOP_ORDER_SVC_ADDR=nowhere, SHOP_UPSTREAM_TIMEOUT="1.5")
    async with stack.channel(no_orders) as channel:
        stub: Stub = comment_pb2_grpc.CommentServiceStub(channel)
        review = await post(stub, ann, product, "Stored, just not verified", rating=4)
        assert not review.verified_purchase
    log = (stack.root / "logs").glob("comment_svc-private-*.log")
    assert any("verified-purchase check failed" in path.read_text() for path in log)


async def test_stops_cleanly_on_sigterm(private: Callable[..., str], stack: Cluster, ann: Caller, product: str) -> None:
    address = await asyncio.to_thread(private)
    async with stack.channel(address) as channel:
        stub: Stub = comment_pb2_grpc.CommentServiceStub(channel)
        await post(stub, ann, product, "Written just before the stop", rating=5)
    [process] = private.processes  # type: ignore[attr-defined]
    assert process.popen is not None
    process.popen.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(process.popen.wait, 20)
    assert code == 0  # the server drained, the relay stopped, the producer flushed
    assert "shutting down" in process.log.read_text()


def create_database(postgres: Postgres, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


async def run(argv: list[str], env: dict[str, str], seconds: float = 60) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=REPO, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), seconds)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_refuses_to_start_on_an_unmigrated_database(stack: Cluster, postgres: Postgres) -> None:
    empty = create_database(postgres, "shop_comment_empty")
    env = private_env(stack, SHOP_DATABASE_URL=postgres.url(empty), SHOP_PORT=str(free_port()))
    code, err = await run([sys.executable, "-m", "comment_svc"], env)
    assert code != 0
    assert UPGRADE in err and "not migrated" in err

    # The migrations go up and back down cleanly.
    alembic = [sys.executable, "-m", "alembic", "-c", "migrations/comment/alembic.ini"]
    for step in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
        code, err = await run([*alembic, *step], env)
        assert code == 0, err


async def test_migrations_match_the_store_tables(stack: Cluster) -> None:
    from comment_svc.store import metadata

    assert schema_drift(stack.postgres.url("shop_comment"), metadata) == []
