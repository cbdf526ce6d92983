"""Alert delivery against real local servers: a webhook receiver (http.server) and an
SMTP server (socketserver, speaking the protocol), both started by the test."""

from __future__ import annotations

import email
import json
import socketserver
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dsa110_contimg.config import validate_config
from dsa110_contimg.monitoring import alerts, notify


class SMTPHandler(socketserver.StreamRequestHandler):
    """Enough SMTP for smtplib: EHLO/HELO, MAIL, RCPT, DATA, QUIT; keeps each message."""

    def reply(self, line: str) -> None:
        self.wfile.write((line + "\r\n").encode())

    def handle(self):
        self.reply("220 localhost test SMTP")
        envelope = {"to": []}
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 localhost")
            elif verb == "MAIL":
                self.reply("250 OK")
            elif verb == "RCPT":
                envelope["to"].append(line.decode().split(":", 1)[1].strip().strip("<>"))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with .")
                data = []
                while (part := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(part[1:] if part.startswith(b"..") else part)
                self.server.messages.append({"to": envelope["to"], "message": email.message_from_bytes(b"".join(data))})
                envelope = {"to": []}
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 OK")


@pytest.fixture
def smtp_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SMTPHandler)
    server.messages = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def hook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.received = received
    server.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXXsecretpath"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _report(failures=(), alerts_=()):
    night = {"night": "2025-06-16", "failures": [
        {"group": g, "rule": rule, "reason": why, "log": f"results/logs/{rule}/{g}.log"} for g, rule, why in failures]}
    return {"nights": [night], "alerts": list(alerts_)}


def test_new_and_resolved_alerts_reach_webhook_and_email_once(tmp_path, hook, smtp_server):
    config = validate_config({"results_dir": str(tmp_path / "results"), "notify": {
        "source": "pipeline-1", "webhook": {"url": hook.url},
        "smtp": {"host": "127.0.0.1", "port": smtp_server.server_address[1], "to": ["ops@example.org"]}}})
    noisy = {"name": "image_noise", "night": "2025-06-16", "message": "median image rms 4.1 x thermal (limit 3.0)"}
    first = _report([("2025-06-16T03:43:54", "convert", "ConversionError: truncated")], [noisy])
    sent = notify.notify(config, alerts.events(first))
    assert sent.failed == [] and sent.channels == ["webhook", "smtp"] and len(sent.sent) == 2
    texts = [m["text"] for m in hook.received]
    assert texts[0] == (":rotating_light: ALERT image_noise 2025-06-16: median image rms 4.1 x thermal (limit 3.0) "
                        "(contimg on pipeline-1)")
    assert "2025-06-16T03:43:54 convert failed: ConversionError: truncated" in texts[1]
    mails = smtp_server.messages
    assert [m["to"] for m in mails] == [["ops@example.org"]] * 2
    assert mails[1]["message"]["Subject"] == "contimg: new jobs_failed"
    assert "2025-06-16T03:43:54 convert failed" in mails[1]["message"].get_payload(decode=True).decode()
    # Same alerts again (the noise figure changed a little): nothing sent.
    again = _report([("2025-06-16T03:43:54", "convert", "ConversionError: truncated")],
                    [dict(noisy, message="median image rms 4.2 x thermal (limit 3.0)")])
    assert notify.notify(config, alerts.events(again)).sent == [] and len(hook.received) == 2
    # The failure is fixed, a new group fails: one RESOLVED, one ALERT.
    later = _report([("2025-06-16T05:00:00", "image", "ImagingError: all flagged")], [noisy])
    sent = notify.notify(config, alerts.events(later))
    assert len(sent.sent) == 2 and len(hook.received) == 4
    assert "ALERT jobs_failed" in hook.received[2]["text"] and "2025-06-16T05:00:00 image" in hook.received[2]["text"]
    assert hook.received[3]["text"].startswith(":white_check_mark: RESOLVED jobs_failed 2025-06-16: 2025-06-16T03:43:54")
    state = json.loads((tmp_path / "results" / "run" / "alerts_state.json").read_text())
    assert sorted(state["events"]) == ["image_noise/2025-06-16", "jobs_failed/2025-06-16T05:00:00/image"]


def test_an_undelivered_alert_is_sent_next_time_and_the_url_never_shows(tmp_path, hook):
    dead = hook.url.replace(str(hook.server_address[1]), "9")  # nothing listens on port 9
    config = validate_config({"results_dir": str(tmp_path / "results"), "notify": {"webhook": {"url": dead}}})
    report = _report([("2025-06-16T03:43:54", "convert", "truncated")])
    out = notify.notify(config, alerts.events(report))
    assert out.sent == [] and len(out.failed) == 1 and "webhook unreachable" in out.failed[0]
    assert "XXXXsecretpath" not in out.failed[0] and "127.0.0.1" not in out.failed[0]
    config["notify"]["webhook"]["url"] = hook.url
    assert len(notify.notify(config, alerts.events(report)).sent) == 1 and len(hook.received) == 1


def test_a_flood_is_summed_up_in_the_last_message(tmp_path, hook, monkeypatch):
    monkeypatch.setenv(notify.WEBHOOK_URL_ENV, hook.url)  # the URL from the environment
    config = validate_config({"results_dir": str(tmp_path / "results"), "notify": {"max_messages": 3}})
    report = _report([(f"2025-06-16T0{k}:00:00", "convert", "truncated") for k in range(6)])
    out = notify.notify(config, alerts.events(report))
    assert len(out.sent) == 3 and len(hook.received) == 3
    assert hook.received[2]["text"].startswith(":rotating_light: 4 more alert change(s)")
    assert notify.notify(config, alerts.events(report)).sent == [], "all six recorded as told"


def test_contimg_run_refuses_to_start_on_a_full_disk(tmp_path, hook, repo_root):
    (tmp_path / "raw").mkdir()
    (tmp_path / "site.yaml").write_text(json.dumps({
        "raw_dir": "raw", "results_dir": "results", "run": {"min_free_gb": 1e9},
        "notify": {"webhook": {"url": hook.url}}}))
    out = subprocess.run([sys.executable, "-m", "dsa110_contimg.cli", "run", "--config", "site.yaml",
                          "--snakefile", str(repo_root / "Snakefile")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "pass 1" not in out.stdout and "disk_low" in out.stdout
    (message,) = [m["text"] for m in hook.received]
    assert "ALERT disk_low" in message and "below run.min_free_gb 1e+09: no job was started" in message
    metrics = (tmp_path / "results" / "run" / "contimg.prom").read_text()
    assert 'contimg_alert{alert="disk_low"} 1.0' in metrics and "contimg_disk_free_bytes{" in metrics
