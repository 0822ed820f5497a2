"""Why Carewatch keeps broker identities in files, not in Mosquitto's dynamic-security plugin.

Starts a private Mosquitto with the dynamic-security plugin, then creates N devices at a time
over $CONTROL (per device a role with its own ACL, since Mosquitto 2.0's dynsec ACLs have no
%u, and a client with that role), in one control message per batch, and prints how long each
batch took as the store grows. The plugin rewrites its whole JSON store after every command.

    .venv/bin/python scripts/measure_dynsec.py --devices 1000 --batches 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker.mosquitto import mosquitto_binary
from carewatch.processes import LOOPBACK, ChildProcess, free_port, is_root, wait_until_listening

PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
)


def main() -> None:
    """Create the devices batch by batch and print how long each batch took."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000, help="devices per batch")
    parser.add_argument("--batches", type=int, default=3)
    args = parser.parse_args()
    plugin = next((p for p in PLUGIN_PATHS if Path(p).exists()), None)
    if plugin is None:
        raise SystemExit("mosquitto_dynamic_security.so not found")
    with tempfile.TemporaryDirectory(prefix="dynsec-") as tmp:
        store = Path(tmp) / "dynamic-security.json"
        subprocess.run(
            ["mosquitto_ctrl", "dynsec", "init", str(store), "admin", "admin-pw"],
            check=True,
            capture_output=True,
        )
        port = free_port()
        config = Path(tmp) / "mosquitto.conf"
        config.write_text(
            f"per_listener_settings false\nallow_anonymous false\nplugin {plugin}\n"
            f"plugin_opt_config_file {store}\nlistener {port} {LOOPBACK}\n"
            + ("user root\n" if is_root() else "")
        )
        with ChildProcess(
            "mosquitto",
            [mosquitto_binary(), "-c", str(config)],
            log_path=Path(tmp) / "mosquitto.log",
        ) as broker:
            if not wait_until_listening(port, timeout_s=10, still_starting=broker.is_running):
                raise SystemExit(f"mosquitto did not start:\n{broker.log_tail()}")
            for batch in range(args.batches):
                seconds = create_devices(port, batch, args.devices)
                existing = batch * args.devices
                print(
                    f"batch {batch + 1}: {args.devices} devices onto {existing}: {seconds:.2f} s"
                    f" (store {store.stat().st_size / 1024:.0f} KiB)",
                    flush=True,
                )


def create_devices(port: int, batch: int, count: int) -> float:
    """Create ``count`` devices (a role and a client each) in one control message; seconds."""
    answered = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set("admin", "admin-pw")
    client.on_message = lambda *_args: answered.set()
    # The broker does nothing else while it works through the batch: a short keepalive would
    # make paho give up on it and lose the answer.
    client.connect(LOOPBACK, port, keepalive=3600)
    client.loop_start()
    client.subscribe("$CONTROL/dynamic-security/v1/response", qos=1)
    time.sleep(0.3)
    commands: list[dict[str, object]] = []
    for i in range(count):
        device = f"dev-{batch}-{i:05d}"
        role = f"device:{device}"
        acl = {"acltype": "publishClientSend", "topic": f"carewatch/devices/{device}/#"}
        commands.append(
            {"command": "createRole", "rolename": role, "acls": [acl | {"allow": True}]}
        )
        commands.append(
            {"command": "createClient", "username": device, "password": "x" * 24,
             "roles": [{"rolename": role}]}
        )  # fmt: skip
    started = time.perf_counter()
    client.publish("$CONTROL/dynamic-security/v1", json.dumps({"commands": commands}), qos=1)
    if not answered.wait(600):
        raise SystemExit("no answer from the dynamic-security plugin")
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return elapsed


if __name__ == "__main__":
    main()
