"""The real servers of the local cluster, each started on loopback, one room per server.

``base`` is what every server is (``Server``, ``binary``); ``postgres``, ``redis``, ``kafka``
(with ``OnKafka``, the servers that run on top of it), ``s3`` (MinIO) and ``tracing`` (Jaeger)
are the servers.  The server classes many places import are re-exported here; their constants
and helpers are imported from their own room.
"""

from devstack.servers.base import Server
from devstack.servers.kafka import Kafka
from devstack.servers.postgres import Postgres
from devstack.servers.redis import Redis
from devstack.servers.s3 import S3
from devstack.servers.tracing import Jaeger

__all__ = ["S3", "Jaeger", "Kafka", "Postgres", "Redis", "Server"]
