"""Alert delivery: a Slack-compatible webhook and, optionally, e-mail over SMTP.

Only changes are sent: events (:mod:`.alerts`) that are new since the last
run, and those that were resolved, each in one message. The events last
sent are kept in a JSON state file (``notify.state_file``); an event whose
delivery failed is not recorded, so the next run sends it again.

The webhook gets ``{"text": ...}`` by POST (what Slack, Mattermost and
Rocket.Chat incoming webhooks take). With a secret, the request also carries
``X-Contimg-Timestamp`` and ``X-Contimg-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<body>">`` for receivers that verify. The URL, the secret and
the SMTP password come from the config or the environment
(``CONTIMG_WEBHOOK_URL``, ``CONTIMG_WEBHOOK_SECRET``, ``CONTIMG_SMTP_PASSWORD``)
and are never logged or printed: a delivery error names the channel only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import platform
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from .. import provenance
from . import alerts as alert_events

WEBHOOK_URL_ENV = "CONTIMG_WEBHOOK_URL"
WEBHOOK_SECRET_ENV = "CONTIMG_WEBHOOK_SECRET"
SMTP_PASSWORD_ENV = "CONTIMG_SMTP_PASSWORD"


class NotifyError(RuntimeError):
    """A message could not be delivered (the message never holds the URL or a secret)."""


@dataclass
class Delivery:
    """What one notification round did."""

    sent: list[str] = field(default_factory=list)
    """Texts delivered (to every configured channel)."""
    failed: list[str] = field(default_factory=list)
    """Why deliveries failed (channel and error, no secret)."""
    channels: list[str] = field(default_factory=list)
    """Channels configured: webhook, smtp."""


def state_path(config: Mapping[str, Any]) -> str:
    return config["notify"]["state_file"] or os.path.join(config["results_dir"], "run", "alerts_state.json")


def load_state(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The events last sent, by key (none when the file does not exist yet)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotifyError(f"{path}: alert state is not JSON ({exc}); delete it to start afresh") from None
    return dict(state.get("events", {}))


def save_state(path: str | os.PathLike[str], events: Mapping[str, Mapping[str, Any]]) -> None:
    with provenance.atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"version": 1, "events": events}, indent=1, sort_keys=True), encoding="utf-8")


def text_of(event: Mapping[str, Any], state: str, source: str) -> str:
    """One line: ALERT or RESOLVED, the alert name, its night, the message, where from."""
    night = f" {event['night']}" if event.get("night") else ""
    mark = ":rotating_light: ALERT" if state == "new" else ":white_check_mark: RESOLVED"
    return f"{mark} {event['name']}{night}: {event['message']} (contimg on {source})"


def _webhook_settings(cfg: Mapping[str, Any]) -> tuple[str | None, str | None]:
    hook = cfg["webhook"]
    return hook["url"] or os.environ.get(WEBHOOK_URL_ENV), hook["secret"] or os.environ.get(WEBHOOK_SECRET_ENV)


def post_webhook(url: str, text: str, secret: str | None = None, timeout_s: float = 10.0) -> None:
    """POST ``{"text": text}`` as JSON (signed with ``secret``); :class:`NotifyError` on any failure."""
    body = json.dumps({"text": text}).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "dsa110-contimg"}
    if secret:
        stamp = str(int(time.time()))
        digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        headers |= {"X-Contimg-Timestamp": stamp, "X-Contimg-Signature": f"sha256={digest}"}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - URL from the operator
            response.read()
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"webhook answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotifyError(f"webhook unreachable ({type(reason).__name__}: {reason})") from None


def send_email(smtp_cfg: Mapping[str, Any], subject: str, text: str) -> None:
    """One e-mail to ``smtp.to`` through ``smtp.host``; :class:`NotifyError` on any failure."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = smtp_cfg["sender"], ", ".join(smtp_cfg["to"]), subject
    msg.set_content(text)
    password = smtp_cfg["password"] or os.environ.get(SMTP_PASSWORD_ENV)
    try:
        with smtplib.SMTP(smtp_cfg["host"], smtp_cfg["port"], timeout=smtp_cfg["timeout_s"]) as smtp:
            if smtp_cfg["starttls"]:
                smtp.starttls()
            if smtp_cfg["username"]:
                smtp.login(smtp_cfg["username"], password or "")
            smtp.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        raise NotifyError(f"e-mail via {smtp_cfg['host']}:{smtp_cfg['port']} failed "
                          f"({type(exc).__name__}: {exc})") from None


def notify(config: Mapping[str, Any], current: Mapping[str, Mapping[str, Any]]) -> Delivery:
    """Send the new and resolved events of ``current`` (see :func:`.alerts.events`); update the state.

    One message per change; beyond ``notify.max_messages`` changes, the last
    message lists the rest. A change is recorded in the state only once its
    message went out on every configured channel.
    """
    cfg = config["notify"]
    path = state_path(config)
    previous = load_state(path)
    new, resolved = alert_events.changes(previous, current)
    url, secret = _webhook_settings(cfg)
    smtp_cfg = cfg["smtp"]
    use_smtp = bool(smtp_cfg["host"] and smtp_cfg["to"])
    out = Delivery(channels=[c for c, on in (("webhook", url), ("smtp", use_smtp)) if on])
    source = cfg["source"] or platform.node()
    changed = [(e, "new") for e in new] + [(e, "resolved") for e in resolved]
    limit = cfg["max_messages"]
    batches = [([(e, kind)], text_of(e, kind, source)) for e, kind in changed[: limit - 1]]
    rest = changed[limit - 1:]
    if len(rest) == 1:
        batches.append((rest, text_of(rest[0][0], rest[0][1], source)))
    elif rest:  # a flood: one message lists the rest
        listed = "; ".join(f"{kind} {e['name']} {e['message']}" for e, kind in rest[:50])
        batches.append((rest, f":rotating_light: {len(rest)} more alert change(s): {listed} (contimg on {source})"))
    state = dict(previous)
    for told, text in batches:
        try:
            if url:
                post_webhook(url, text, secret, cfg["webhook"]["timeout_s"])
            if use_smtp:
                subject = f"contimg: {told[0][1]} {told[0][0]['name']}" + (" and more" if len(told) > 1 else "")
                send_email(smtp_cfg, subject, text)
        except NotifyError as exc:
            out.failed.append(str(exc))
            continue  # not recorded: sent again next run
        out.sent.append(text)
        for event, kind in told:
            if kind == "new":
                state[event["key"]] = event
            else:
                state.pop(event["key"], None)
    save_state(path, state)
    return out
