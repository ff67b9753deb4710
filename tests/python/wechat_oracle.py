"""Independent WeChat Pay API v3 implementation for kassa's tests: PyPI wechatpayv3
(public-key mode) and cryptography (certificate mode, following WeChat's documented
algorithm). Reads one JSON command on stdin, answers JSON on stdout.

Ops:
  check_request      verify kassa's Authorization over the request as sent, and sign the
                     same request with wechatpayv3's build_authorization
  sign_notification  build a notification as WeChat does (resource encrypted with
                     AES-256-GCM, body signed); in public-key mode also check that
                     wechatpayv3's callback() accepts it
  verify_notification  wechatpayv3's callback() over a notification as received
  client_calls       wechatpayv3 as a client of kassa's sandbox: pay, query, close
  make_certificate   a self-signed platform certificate for a given key, serial and
                     validity (e.g. one that has expired), as PEM
"""
import base64
import datetime
import json
import os
import re
import sys
import time
import uuid
from unittest import mock

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3 import utils

SCHEMA = "WECHATPAY2-SHA256-RSA2048"


def attributes(header):
    scheme, _, rest = header.partition(" ")
    assert scheme == SCHEMA, scheme
    return dict(re.findall(r'(\w+)="([^"]*)"', rest))


def check_request(cmd):
    attrs = attributes(cmd["authorization"])
    message = "%s\n%s\n%s\n%s\n%s\n" % (
        cmd["method"], cmd["path"], attrs["timestamp"], attrs["nonce_str"], cmd["body"])
    public = load_pem_public_key(cmd["merchant_public_key"].encode())
    try:
        public.verify(base64.b64decode(attrs["signature"]), message.encode(), PKCS1v15(), SHA256())
        verifies = True
    except Exception:
        verifies = False
    private = load_pem_private_key(cmd["merchant_private_key"].encode(), password=None)
    with mock.patch.object(time, "time", return_value=int(attrs["timestamp"])):
        theirs = utils.build_authorization(
            cmd["path"], cmd["method"], attrs["mchid"], attrs["serial_no"], private,
            data=cmd["body"] or None, nonce_str=attrs["nonce_str"])
    return {"verifies": verifies,
            "same_signature": attributes(theirs)["signature"] == attrs["signature"],
            "attributes": attrs}


def sign_notification(cmd):
    apiv3 = cmd["apiv3_key"]
    nonce12 = uuid.uuid4().hex[:12]
    original = "refund" if cmd["event_type"].startswith("REFUND") else "transaction"
    plaintext = json.dumps(cmd["resource"], ensure_ascii=False).encode()
    ct = AESGCM(apiv3.encode()).encrypt(nonce12.encode(), plaintext, original.encode())
    notif = {"id": str(uuid.uuid4()), "create_time": "2026-11-24T11:30:07+08:00",
             "resource_type": "encrypt-resource", "event_type": cmd["event_type"], "summary": "支付成功",
             "resource": {"original_type": original, "algorithm": "AEAD_AES_256_GCM",
                          "ciphertext": base64.b64encode(ct).decode(), "associated_data": original,
                          "nonce": nonce12}}
    raw = json.dumps(notif, ensure_ascii=False, separators=(",", ":"))
    ts, nonce = str(cmd["timestamp"]), uuid.uuid4().hex.upper()
    if cmd["mode"] == "certificate":
        # WeChat names a platform certificate by its serial number in upper-case hex.
        cert = x509.load_pem_x509_certificate(cmd["certificate"].encode())
        serial = format(cert.serial_number, "X")
    else:
        serial = cmd["public_key_id"]
    key = load_pem_private_key(cmd["private_key"].encode(), password=None)
    signature = base64.b64encode(
        key.sign(("%s\n%s\n%s\n" % (ts, nonce, raw)).encode(), PKCS1v15(), SHA256())).decode()
    headers = {"Content-Type": "application/json", "Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce,
               "Wechatpay-Signature": signature, "Wechatpay-Serial": serial,
               "Wechatpay-Signature-Type": SCHEMA}
    answer = {"body": raw, "headers": headers}
    if cmd["mode"] == "public_key":
        wx = wechatpay(cmd, apiv3)
        answer["wechatpayv3_accepts"] = wx.callback(headers, raw.encode()) is not None
    return answer


def wechatpay(cmd, apiv3):
    return WeChatPay(wechatpay_type=WeChatPayType.NATIVE, mchid=cmd.get("mchid", "1230000109"),
                     private_key=cmd["merchant_private_key"], cert_serial_no="5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
                     appid=cmd.get("appid", "wxd678efh567hg6787"), apiv3_key=apiv3,
                     notify_url=cmd.get("notify_url", "http://127.0.0.1/notify/wechat"),
                     public_key=cmd["public_key"], public_key_id=cmd["public_key_id"])


def verify_notification(cmd):
    wx = wechatpay(cmd, cmd["apiv3_key"])
    result = wx.callback(cmd["headers"], cmd["body"].encode())
    return {"result": result}


def client_calls(cmd):
    wx = wechatpay(cmd, cmd["apiv3_key"])
    wx._core._gate_way = cmd["gateway"]
    no = cmd["out_trade_no"]
    out = {}
    code, text = wx.pay(description="wechatpayv3 client", out_trade_no=no, amount={"total": cmd["total"]},
                        notify_url=cmd["notify_url"], pay_type=WeChatPayType.NATIVE)
    out["pay"] = [code, json.loads(text)]
    code, text = wx.query(out_trade_no=no)
    out["query"] = [code, json.loads(text)]
    code, text = wx.close(out_trade_no=no)
    out["close"] = [code, text if isinstance(text, str) else text.decode()]
    code, text = wx.query(out_trade_no=no)
    out["query_after_close"] = [code, json.loads(text)]
    return out


def make_certificate(cmd):
    key = load_pem_private_key(cmd["private_key"].encode(), password=None)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Tenpay.com Root CA test")])
    when = lambda text: datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(int(cmd["serial"], 16)).not_valid_before(when(cmd["not_before"]))
            .not_valid_after(when(cmd["not_after"])).sign(key, SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding
    return {"pem": cert.public_bytes(Encoding.PEM).decode(), "serial": format(cert.serial_number, "X")}


def main():
    cmd = json.load(sys.stdin)
    op = {"check_request": check_request, "sign_notification": sign_notification,
          "verify_notification": verify_notification, "client_calls": client_calls,
          "make_certificate": make_certificate}[cmd["op"]]
    json.dump(op(cmd), sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    main()
