"""Job webhooks through the deployed app: a real HTTP receiver on 127.0.0.1 that checks every delivery
with the SDK's verifier and with an independent implementation of the Standard Webhooks signature;
durable, at-least-once delivery with one webhook-id across retries and a killed gateway replica."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import ray
from helpers import Receiver, independent_verify, wait_job

from huabu.deployments.gateway.auth import key_hash
from huabu.sdk import webhooks

pytestmark = pytest.mark.serve


ADMIN_KEY = "hb_admin-for-webhook-tests"
UNKNOWN = "whs_0000000000000000"


@pytest.fixture(scope="module")
def hook_app(deploy_app):
    # Private addresses allowed (the receiver is on 127.0.0.1); retries within seconds.
    return deploy_app(
        auth={"enabled": True, "admin_key_sha256": key_hash(ADMIN_KEY), "default_rate": "1000/min"},
        webhooks={"allow_private": True, "backoff_base_s": 2.0, "backoff_max_s": 4.0, "poll_interval_s": 0.2},
    )


@pytest.fixture(scope="module")
def user(hook_app) -> tuple[str, str]:
    """(key id, key) of a generate-scoped key: its jobs' webhooks are signed with its secrets."""
    with hook_app.client() as c:
        r = c.post("/v1/admin/keys", json={"name": "hooks"}, headers=bearer(ADMIN_KEY))
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def secret(hook_app, user) -> str:
    key_id, key = user
    path = f"/v1/admin/keys/{key_id}/webhook-secrets"
    with hook_app.client() as c:
        r = c.post(path, headers=bearer(ADMIN_KEY))
        assert r.status_code == 201, r.text
        listed = c.get(path, headers=bearer(ADMIN_KEY)).json()["data"]
        assert c.post(path, headers=bearer(key)).status_code == 403  # the admin API only
    assert [s["id"] for s in listed] == [r.json()["id"]] and "secret" not in listed[0]  # shown once
    return r.json()["secret"]


@pytest.fixture
def receiver(secret) -> Iterator[Receiver]:
    receiver = Receiver(secret, fail_first=3)
    yield receiver
    receiver.server.shutdown()


def gateway_replicas(app_name: str) -> list:
    prefix = f"SERVE_REPLICA::{app_name}#Gateway#"
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
    return [ray.get_actor(n, namespace="serve") for n in names]


def test_delivery_is_retried_with_one_webhook_id_across_a_killed_gateway(hook_app, user, receiver) -> None:
    body = {"kind": "generate", "prompt": "a hook", "steps": 2, "size": "32x32", "webhook": {"url": receiver.url}}
    with hook_app.client(timeout=30) as c:
        c.headers.update(bearer(user[1]))
        job_id = c.post("/v1/jobs", json=body).json()["id"]
        assert wait_job(c, job_id)["status"] == "succeeded"
        receiver.wait(lambda: len(receiver.attempts) >= 1)
        for actor in gateway_replicas(hook_app.name):  # between attempts: the retry is in the store only
            ray.kill(actor, no_restart=True)
        receiver.wait(lambda: receiver.accepted, timeout=120)
        time.sleep(3)  # nothing more arrives once a delivery was accepted
        deliveries = wait_listed(c, job_id)
    statuses = [a[2] for a in receiver.attempts]
    assert statuses[:3] == [500, 500, 500] and statuses[3:] == [204], statuses
    assert len({a[0]["webhook-id"] for a in receiver.attempts}) == 1  # one message, every attempt
    assert len({a[0]["webhook-signature"] for a in receiver.attempts}) == len(receiver.attempts)  # signed afresh
    [event] = receiver.accepted
    assert event["type"] == "job.succeeded" and event["data"]["id"] == job_id
    assert event["data"]["status"] == "succeeded" and "b64_json" not in event["data"]["result"]["data"][0]
    [delivery] = deliveries
    assert delivery["id"] == receiver.attempts[0][0]["webhook-id"] and delivery["event"] == "job.succeeded"
    assert delivery["status"] == "delivered" and delivery["attempts"][-1]["status_code"] == 204
    # An attempt cut short by the kill may be missing from the record, never one of the others.
    assert 3 <= len(delivery["attempts"]) <= 4 and delivery["attempts"][0]["status_code"] == 500


def wait_listed(c, job_id: str) -> list[dict]:
    deadline = time.monotonic() + 30
    while True:
        r = c.get(f"/v1/jobs/{job_id}/deliveries")
        if r.status_code == 200 and r.json()["data"] and r.json()["data"][0]["status"] != "pending":
            return r.json()["data"]
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)


def test_canceled_and_progress_events_reach_the_receiver(hook_app, user, secret) -> None:
    receiver = Receiver(secret)
    try:
        hook = {"url": receiver.url, "events": ["progress", "cancelled"]}  # either spelling
        # Outlasts its cancel on a loaded machine too (the cancel ends it within a few steps).
        body = {"kind": "generate", "prompt": "stop me", "steps": 200, "size": "64x64", "cache": "bypass"}
        body["webhook"] = hook
        with hook_app.client(timeout=30) as c:
            c.headers.update(bearer(user[1]))
            job_id = c.post("/v1/jobs", json=body).json()["id"]
            receiver.wait(lambda: any(json.loads(a[1])["type"] == "job.progress" for a in receiver.attempts))
            c.delete(f"/v1/jobs/{job_id}")
            receiver.wait(lambda: any(e["type"] == "job.canceled" for e in receiver.accepted))
    finally:
        receiver.server.shutdown()
    # Messages are independent deliveries: no order is promised between them (as in the specification).
    assert {e["type"] for e in receiver.accepted} == {"job.progress", "job.canceled"}
    [canceled] = [e for e in receiver.accepted if e["type"] == "job.canceled"]
    assert canceled["data"]["cancel_reason"] == "requested" and canceled["data"]["status"] == "canceled"


def test_a_webhook_needs_a_signing_secret_of_its_key(hook_app, user) -> None:
    with hook_app.client() as c:
        c.headers.update(bearer(user[1]))
        r = c.post(
            "/v1/jobs",
            json={"kind": "generate", "prompt": "x", "webhook": {"url": "http://127.0.0.1:9/h", "secret_id": UNKNOWN}},
        )
    assert r.status_code == 400 and r.json()["error"]["param"] == "webhook.secret_id", r.text


def test_the_openai_client_asks_for_a_webhook_with_a_header(hook_app, user, secret) -> None:
    """The OpenAI-compatible route takes a webhook in headers (its body has no room for one): the
    unmodified client gets its images in the answer and the receiver the signed job.succeeded."""
    import openai

    receiver = Receiver(secret)
    client = openai.OpenAI(base_url=f"{hook_app.base_url}/v1", api_key=user[1], max_retries=0, timeout=60)
    try:
        raw = client.images.with_raw_response.generate(
            prompt="a hooked circle",
            size="32x32",  # type: ignore[arg-type]
            response_format="b64_json",
            extra_headers={"X-Huabu-Webhook": receiver.url, "X-Huabu-Webhook-Events": "succeeded, failed"},
            extra_body={"steps": 2},
        )
        receiver.wait(lambda: receiver.accepted)
        bad = {
            "X-Huabu-Webhook": {"X-Huabu-Webhook": "ftp://127.0.0.1/h"},
            "X-Huabu-Webhook-Events": {"X-Huabu-Webhook": receiver.url, "X-Huabu-Webhook-Events": "done"},
            "X-Huabu-Webhook-Secret-Id": {"X-Huabu-Webhook": receiver.url, "X-Huabu-Webhook-Secret-Id": UNKNOWN},
        }
        refused = {}
        for param, headers in bad.items():
            with pytest.raises(openai.BadRequestError) as info:
                client.images.generate(prompt="x", size="32x32", extra_headers=headers)  # type: ignore[arg-type]
            refused[param] = info.value.body
    finally:
        receiver.server.shutdown()
    assert raw.http_response.status_code == 200 and raw.parse().data[0].b64_json
    job_id = raw.headers["x-huabu-job-id"]
    [event] = receiver.accepted
    assert event["type"] == "job.succeeded" and event["data"]["id"] == job_id
    for param, body in refused.items():
        assert body["param"] == param and param in body["message"], body  # type: ignore[index]


def test_the_sdk_verifier_refuses_what_was_not_signed_with_the_secret() -> None:
    secret, other = webhooks.new_secret(), webhooks.new_secret()
    body = b'{"type":"job.succeeded"}'
    headers = webhooks.signed_headers([secret], "msg_1", body)
    assert webhooks.verify(body, headers, secret) == {"type": "job.succeeded"}
    assert independent_verify(body, headers, secret)
    rotated = webhooks.signed_headers([other, secret], "msg_1", body)  # rotation: either secret verifies
    assert webhooks.verify(body, rotated, secret) and webhooks.verify(body, rotated, other)
    for bad_body, bad_headers, key in (
        (body, headers, other),
        (body + b" ", headers, secret),
        (body, {**headers, "webhook-id": "msg_2"}, secret),
        (body, webhooks.signed_headers([secret], "msg_1", body, timestamp=int(time.time()) - 3600), secret),
    ):
        with pytest.raises(webhooks.WebhookVerificationError):
            webhooks.verify(bad_body, bad_headers, key)


async def test_a_delivery_connects_to_the_address_it_checked(redis_url, monkeypatch) -> None:
    """DNS rebinding: the receiver's name resolves to a public address when it is checked and to
    127.0.0.1 a moment later. The attempt connects to the address it checked (the resolver is not
    asked again), so the receiver listening inside, on 127.0.0.1, never sees the delivery."""
    import socket

    from huabu.deployments.core.settings import StateSettings, WebhookSettings
    from huabu.deployments.core.state import open_store
    from huabu.deployments.gateway.webhooks import StoredDelivery, WebhookDispatcher, WebhookOutbox, WebhookSecrets

    kv = open_store(StateSettings(backend="redis", redis_url=redis_url, namespace=f"pin{time.time_ns()}"))
    secret = await WebhookSecrets(kv).create("key_pin")
    inside = Receiver(secret.secret)
    port = inside.server.server_address[1]
    real = socket.getaddrinfo
    asked: list[str] = []

    def rebinding(host, *args, **kwargs):  # the socket module's resolver: what asyncio and httpx both use
        if host not in ("hooks.rebind.test", b"hooks.rebind.test"):  # anyio passes the name IDNA-encoded
            return real(host, *args, **kwargs)
        asked.append(host if isinstance(host, str) else host.decode())
        address = "8.8.4.4" if len(asked) == 1 else "127.0.0.1"  # public when checked, then inside
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    settings = WebhookSettings(connect_timeout_s=1.0, read_timeout_s=1.0)
    dispatcher = WebhookDispatcher(WebhookOutbox(kv, settings, 3600), WebhookSecrets(kv), owner="pin-test")
    record = StoredDelivery(
        id="msg_pin",
        job_id="job_pin",
        event="job.succeeded",
        url=f"http://hooks.rebind.test:{port}/hooks",
        status="pending",
        created_at=time.time(),
        key_id="key_pin",
        secret_id=secret.id,
        payload='{"type": "job.succeeded"}',
    )
    try:
        attempt = await dispatcher._attempt(record)
    finally:
        await dispatcher.stop()
        inside.server.shutdown()
    assert asked == ["hooks.rebind.test"]  # checked once, never resolved again for the connection
    assert attempt.status_code is None and attempt.error, attempt  # 8.8.4.4 is not reachable from here
    assert inside.attempts == []  # nothing reached the receiver inside
