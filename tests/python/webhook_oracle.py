"""Independent Standard Webhooks verification for kassa's tests, with PyPI's
standardwebhooks package. Reads {"secret", "headers", "body", "now"?} on stdin and
answers {"ok": true, "type": ...} or {"ok": false, "error": ...}.

The package checks the timestamp against its clock (5 minutes either way). Tests that
move kassa's clock forward pass that time as "now" (unix seconds), so the package's
own check runs against the same clock.
"""
import json
import sys
from datetime import datetime, timezone

import standardwebhooks.webhooks as webhooks
from standardwebhooks import Webhook


def main():
    cmd = json.load(sys.stdin)
    if cmd.get("now") is not None:
        fixed = datetime.fromtimestamp(cmd["now"], tz=timezone.utc)

        class FixedDatetime(datetime):
            @classmethod
            def now(cls, tz=None):
                return fixed

        webhooks.datetime = FixedDatetime
    try:
        payload = Webhook(cmd["secret"]).verify(cmd["body"], cmd["headers"])
        json.dump({"ok": True, "type": payload.get("type")}, sys.stdout)
    except Exception as e:  # the test asserts on ok
        json.dump({"ok": False, "error": f"{type(e).__name__}: {e}"}, sys.stdout)


if __name__ == "__main__":
    main()
