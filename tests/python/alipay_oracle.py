"""Independent Alipay implementation for kassa's tests, built on PyPI's
python-alipay-sdk (fzlee/alipay) through its public API only: the constructor,
sign_data(), verify() and the api_alipay_trade_* client methods. It never builds a
string-to-sign itself. Reads one JSON command on stdin, writes one JSON answer on
stdout.

Commands:
  sign_notification   {private_key, public_key, params}
      -> {body, verifies_as_sent, verifies_without_empty}
      A form body signed as Alipay signs notifications: sign_type and empty values are
      not signed (the current Java SDK's rule), yet both are sent, so an empty value in
      `params` reaches kassa. verifies_as_sent is the SDK's verify() over everything
      sent (it keeps empty values, so an empty value makes it false);
      verifies_without_empty is verify() once empty values are dropped (always true,
      or the command fails).
  sign_notifications  {private_key, public_key, params_list}
      -> {bodies}: sign_notification's body for each, in one process and with one
      client (many at once), without its checks.
  verify_notification {public_key, any_private_key, body}
      -> {valid, params}: verify() over a notification exactly as received.
  verify_request      {app_private_key, params}
      -> {valid}: a request signature as the gateway checks it (sign_type signed). The
      SDK has no public request verifier; sign_data() signs the same parameters with
      the same key and PKCS#1 v1.5 signatures are deterministic, so the two signatures
      are equal exactly when kassa signed the text the SDK signs.
  call_gateway        {gateway, app_id, app_private_key, alipay_public_key, method, kwargs}
      -> {result} or {error, message}: the SDK as a client (api_alipay_trade_*),
      verifying each response's signature.
  call_gateway_text   {gateway, app_id, app_private_key, alipay_public_key, method,
                       biz_content}
      -> {result} or {error, message}: the same client sending `biz_content` as the
      exact JSON text given (for number forms a Python float cannot write, such as
      `8.888e1`), through the SDK's public build_body() and verified_sync_response(),
      which sign and send it as they send the text of a dict.
"""
import json
import sys
import urllib.parse

from alipay import AliPay


def client(app_id, private_key, public_key):
    return AliPay(appid=app_id, app_private_key_string=private_key,
                  alipay_public_key_string=public_key, sign_type="RSA2")


def signature_of(signed_string):
    """The `sign` that sign_data() appended to its transmit string."""
    return dict(urllib.parse.parse_qsl(signed_string, keep_blank_values=True))["sign"]


def sign_notification(cmd):
    params = cmd["params"]
    unsigned = {k: v for k, v in params.items() if k == "sign_type" or v == ""}
    signed = {k: v for k, v in params.items() if k not in unsigned and k != "sign"}
    # The notifier signs with the platform key; the SDK signs with the key given as the
    # "app private key", so the platform key goes there.
    signer = client("oracle", cmd["private_key"], cmd["public_key"])
    body = signer.sign_data(dict(signed))
    if unsigned:
        body += "&" + urllib.parse.urlencode(unsigned)
    received = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
    sig = received.pop("sign")
    verifier = client("oracle", cmd["private_key"], cmd["public_key"])
    as_sent = verifier.verify(dict(received), sig)
    without_empty = verifier.verify({k: v for k, v in received.items() if v != ""}, sig)
    assert without_empty, "python-alipay-sdk rejects its own notification"
    return {"body": body, "verifies_as_sent": as_sent, "verifies_without_empty": without_empty}


def sign_notifications(cmd):
    """Bodies signed as sign_notification signs them, for each of `params_list`, with one
    client (building one costs more than a signature) and without the checks."""
    signer = client("oracle", cmd["private_key"], cmd["public_key"])
    bodies = []
    for params in cmd["params_list"]:
        unsigned = {k: v for k, v in params.items() if k == "sign_type" or v == ""}
        signed = {k: v for k, v in params.items() if k not in unsigned and k != "sign"}
        body = signer.sign_data(dict(signed))
        if unsigned:
            body += "&" + urllib.parse.urlencode(unsigned)
        bodies.append(body)
    return {"bodies": bodies}


def verify_notification(cmd):
    pairs = urllib.parse.parse_qsl(cmd["body"], keep_blank_values=True, strict_parsing=True)
    received = dict(pairs)
    if len(received) != len(pairs):
        return {"valid": False, "params": received, "error": "a parameter is repeated"}
    sig = received.pop("sign", "")
    verifier = client("oracle", cmd["any_private_key"], cmd["public_key"])
    return {"valid": bool(verifier.verify(dict(received), sig)), "params": received}


def verify_request(cmd):
    params = dict(cmd["params"])
    sig = params.pop("sign", "")
    signer = client("oracle", cmd["app_private_key"], cmd["app_public_key"])
    return {"valid": signature_of(signer.sign_data(params)) == sig}


def call_gateway(cmd):
    cli = client(cmd["app_id"], cmd["app_private_key"], cmd["alipay_public_key"])
    # The SDK has no public setting for the gateway URL (only debug=True, Alipay's own
    # sandbox); this attribute is where its client methods send requests.
    cli._gateway = cmd["gateway"]
    method = getattr(cli, cmd["method"])
    try:
        return {"result": method(**cmd.get("kwargs", {}))}
    except Exception as e:  # the test asserts on the type
        return {"error": type(e).__name__, "message": str(e)}


def call_gateway_text(cmd):
    cli = client(cmd["app_id"], cmd["app_private_key"], cmd["alipay_public_key"])
    cli._gateway = cmd["gateway"]
    method = cmd["method"]
    data = cli.build_body(method, cmd["biz_content"])
    try:
        return {"result": cli.verified_sync_response(data, method.replace(".", "_") + "_response")}
    except Exception as e:  # the test asserts on the type
        return {"error": type(e).__name__, "message": str(e)}


def main():
    cmd = json.load(sys.stdin)
    op = {"sign_notification": sign_notification, "sign_notifications": sign_notifications,
          "verify_notification": verify_notification,
          "verify_request": verify_request, "call_gateway": call_gateway,
          "call_gateway_text": call_gateway_text}[cmd["op"]]
    json.dump(op(cmd), sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
