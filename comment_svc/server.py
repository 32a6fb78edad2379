"""The CommentService servicer: proto in → convert → one use case → convert → proto out."""

from __future__ import annotations

from shop.comment.v1 import comment_pb2, comment_pb2_grpc

from comment_svc import convert
from comment_svc.comments import Comments
from common.grpc_server import Context
from common.identity import callers


class CommentService(comment_pb2_grpc.CommentServiceServicer):
    def __init__(self, comments: Comments) -> None:
        self.comments = comments

    # -- writes
    @callers("edge")
    async def CreateComment(
        self, request: comment_pb2.CreateCommentRequest, context: Context
    ) -> comment_pb2.CreateCommentResponse:
        comment = await self.comments.create(convert.caller(), convert.new_comment(request), convert.forwarded(context))
        return comment_pb2.CreateCommentResponse(comment=convert.comment_to_proto(comment))

    @callers("edge")
    async def UpdateComment(
        self, request: comment_pb2.UpdateCommentRequest, context: Context
    ) -> comment_pb2.UpdateCommentResponse:
        viewed = await self.comments.update(convert.caller(), convert.comment_id(request), convert.change(request))
        return comment_pb2.UpdateCommentResponse(comment=convert.viewed_to_proto(viewed))

    @callers("edge")
    async def DeleteComment(
        self, request: comment_pb2.DeleteCommentRequest, context: Context
    ) -> comment_pb2.DeleteCommentResponse:
        await self.comments.delete(convert.caller(), convert.comment_id(request))
        return comment_pb2.DeleteCommentResponse()

    @callers("edge")
    async def LikeComment(
        self, request: comment_pb2.LikeCommentRequest, context: Context
    ) -> comment_pb2.LikeCommentResponse:
        count = await self.comments.like(convert.caller(), convert.comment_id(request), convert.forwarded(context))
        return comment_pb2.LikeCommentResponse(like_count=count, liked_by_me=True)

    @callers("edge")
    async def UnlikeComment(
        self, request: comment_pb2.UnlikeCommentRequest, context: Context
    ) -> comment_pb2.UnlikeCommentResponse:
        count = await self.comments.unlike(convert.caller(), convert.comment_id(request))
        return comment_pb2.UnlikeCommentResponse(like_count=count, liked_by_me=False)

    # -- reads
    @callers("edge")
    async def ListComments(
        self, request: comment_pb2.ListCommentsRequest, context: Context
    ) -> comment_pb2.ListCommentsResponse:
        page = await self.comments.list_comments(convert.list_query(request), convert.viewer())
        return convert.page_to_proto(page)

    @callers("edge")
    async def GetComment(
        self, request: comment_pb2.GetCommentRequest, context: Context
    ) -> comment_pb2.GetCommentResponse:
        viewed = await self.comments.get(convert.comment_id(request), convert.viewer())
        return comment_pb2.GetCommentResponse(comment=convert.viewed_to_proto(viewed))

    @callers("edge")
    async def GetRatingSummary(
        self, request: comment_pb2.GetRatingSummaryRequest, context: Context
    ) -> comment_pb2.GetRatingSummaryResponse:
        summary = await self.comments.rating_summary(convert.product_id(request))
        return comment_pb2.GetRatingSummaryResponse(summary=convert.summary_to_proto(summary))

    @callers("edge")
    async def BatchGetRatingSummaries(
        self, request: comment_pb2.BatchGetRatingSummariesRequest, context: Context
    ) -> comment_pb2.BatchGetRatingSummariesResponse:
        summaries = await self.comments.rating_summaries(convert.product_ids(request))
        return comment_pb2.BatchGetRatingSummariesResponse(
            summaries=[convert.summary_to_proto(summary) for summary in summaries]
        )
