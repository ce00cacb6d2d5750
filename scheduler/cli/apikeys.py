"""`spillway keys`: API keys stored in Redis, hashed, managed over the scheduler's
`Admin` gRPC service with an operator key.

    spillway keys create --tenant acme [--operator] [--name ci] [--ttl 86400]
    spillway keys list
    spillway keys revoke key_0123456789abcdef

The new key is printed once, by create. Exit codes: 0 done; 1 refused (a tenant's key:
PERMISSION_DENIED, bad input); 2 bad usage; 3 no such key; 4 the scheduler could not be
reached.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from spillway.v1 import admin_pb2 as pb
from spillway.v1 import admin_pb2_grpc

from scheduler.cli.jobs import FAILED, NOT_FOUND, OK, UNREACHABLE, USAGE, fail, table, when

ACTIONS = ("create", "list", "revoke")


async def run(args: argparse.Namespace) -> int:
    name = f"spillway keys {args.action}"
    if not args.api_key:
        return fail(name, "set SPILLWAY_API_KEY (an operator key) or pass --api-key", USAGE)
    if args.action == "create" and not args.tenant:
        return fail(name, "give --tenant", USAGE)
    if args.action == "revoke" and not args.id:
        return fail(name, "give the key's id (key_...)", USAGE)
    metadata = (("authorization", f"Bearer {args.api_key}"),)
    try:
        async with grpc.aio.insecure_channel(args.addr) as channel:
            stub = admin_pb2_grpc.AdminStub(channel)
            return await _run(stub, args, metadata)
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code is grpc.StatusCode.UNAVAILABLE:
            return fail(name, f"cannot reach {args.addr}: {exc.details()}", UNREACHABLE)
        status = NOT_FOUND if code is grpc.StatusCode.NOT_FOUND else FAILED
        return fail(name, f"{code.name}: {exc.details()}", status)


async def _run(stub: Any, args: argparse.Namespace, metadata: Any) -> int:
    if args.action == "create":
        scope = pb.KEY_SCOPE_OPERATOR if args.operator else pb.KEY_SCOPE_TENANT
        created = await stub.CreateApiKey(
            pb.CreateApiKeyRequest(
                tenant=args.tenant, scope=scope, name=args.name or "", ttl_seconds=args.ttl
            ),
            metadata=metadata,
            timeout=10,
        )
        if args.json:
            print(json.dumps({"key": _dict(created.key), "secret": created.secret}))
        else:
            print(created.secret)
            print(f"({created.key.id} for {created.key.tenant}: shown only now)", flush=True)
        return OK
    if args.action == "list":
        listed = await stub.ListApiKeys(pb.ListApiKeysRequest(), metadata=metadata, timeout=10)
        if args.json:
            print(json.dumps([_dict(k) for k in listed.keys]))
        else:
            print(to_table(list(listed.keys)))
        return OK
    revoked = await stub.RevokeApiKey(
        pb.RevokeApiKeyRequest(id=args.id), metadata=metadata, timeout=10
    )
    print(json.dumps(_dict(revoked.key)) if args.json else f"revoked {revoked.key.id}")
    return OK


def _dict(key: pb.ApiKey) -> dict[str, Any]:
    return MessageToDict(key, preserving_proto_field_name=True)


def to_table(keys: list[pb.ApiKey]) -> str:
    if not keys:
        return "no stored keys (bootstrap keys from the environment are not listed)"
    rows = [("id", "tenant", "scope", "name", "key", "created (UTC)", "expires (UTC)")]
    rows += [
        (
            k.id,
            k.tenant,
            "operator" if k.scope == pb.KEY_SCOPE_OPERATOR else "tenant",
            k.name,
            f"...{k.hint}",
            when(k.created_at.seconds),
            when(k.expires_at.seconds) if k.HasField("expires_at") else "never",
        )
        for k in keys
    ]
    return table(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("id", nargs="?", help="for revoke: the key's id (key_...)")
    parser.add_argument("--tenant", help="for create")
    parser.add_argument("--operator", action="store_true", help="for create: operator scope")
    parser.add_argument("--name", help="for create: what the key is for")
    parser.add_argument("--ttl", type=int, default=0, help="for create: seconds until it expires")
    parser.add_argument("--json", action="store_true", help="JSON instead of text")
    add_connection_arguments(parser)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The scheduler to call and the operator key to call it with."""
    parser.add_argument(
        "--addr",
        default=os.environ.get("SPILLWAY_SCHEDULER_ADDR", "127.0.0.1:50051"),
        help="scheduler gRPC address (SPILLWAY_SCHEDULER_ADDR, default %(default)s)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("SPILLWAY_API_KEY"), help="(SPILLWAY_API_KEY)"
    )
