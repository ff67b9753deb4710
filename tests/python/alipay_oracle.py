"""Independent Alipay implementation for kassa's tests, built on PyPI's
python-alipay-sdk (fzlee/alipay). Reads one JSON command on stdin, writes one JSON
answer on stdout.

Commands:
  sign_notification  {private_key, params}          -> {body}   a form body signed as Alipay signs
                                                                notifications (sign_type and empty
                                                                values left out of the string)
  verify_request     {public_key, params}           -> {valid}  a request signature as the gateway
                                                                checks it (sign_type signed)
  call_gateway       {gateway, app_id, app_private_key, alipay_public_key, method, kwargs}
                                                     -> {result} or {error}: python-alipay-sdk as a
                                                                client, verifying the response signature
"""
import json
import sys
import urllib.parse

from alipay import AliPay


def client(app_id, private_key, public_key):
    return AliPay(appid=app_id, app_private_key_string=private_key,
                  alipay_public_key_string=public_key, sign_type="RSA2")


def sign_notification(cmd):
    params = {k: v for k, v in cmd["params"].items() if v != ""}
    content = "&".join(f"{k}={v}" for k, v in sorted(params.items())
                       if k not in ("sign", "sign_type"))
    # The notifier signs with the platform key; AliPay._sign signs with the key given
    # as the "app private key", so the platform key goes there.
    signer = client("oracle", cmd["private_key"], cmd["public_key"])
    params["sign"] = signer._sign(content)
    check = dict(params)
    sig = check.pop("sign")
    verifier = client("oracle", cmd["private_key"], cmd["public_key"])
    assert verifier.verify(check, sig), "python-alipay-sdk rejects its own notification"
    return {"body": urllib.parse.urlencode(params)}


def verify_request(cmd):
    params = {k: v for k, v in cmd["params"].items() if v != ""}
    sig = params.pop("sign", "")
    content = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    verifier = client("oracle", cmd["any_private_key"], cmd["public_key"])
    return {"valid": bool(verifier._verify(content, sig))}


def call_gateway(cmd):
    cli = client(cmd["app_id"], cmd["app_private_key"], cmd["alipay_public_key"])
    cli._gateway = cmd["gateway"]
    method = getattr(cli, cmd["method"])
    try:
        return {"result": method(**cmd.get("kwargs", {}))}
    except Exception as e:  # the test asserts on the type
        return {"error": type(e).__name__, "message": str(e)}


def main():
    cmd = json.load(sys.stdin)
    op = {"sign_notification": sign_notification, "verify_request": verify_request,
          "call_gateway": call_gateway}[cmd["op"]]
    json.dump(op(cmd), sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
