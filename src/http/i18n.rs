//! The customer's language: `?lang=` (remembered in a cookie), then the cookie, then
//! `Accept-Language`. Chinese (zh-CN) and English.

use actix_web::HttpRequest;

pub const COOKIE: &str = "kassa_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// Alipay and WeChat Pay customers read Chinese first.
    #[default]
    ZhCn,
    En,
}

impl Lang {
    pub fn tag(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }

    pub fn parse(tag: &str) -> Option<Lang> {
        let tag = tag.trim().to_ascii_lowercase();
        if tag == "zh" || tag.starts_with("zh-") {
            Some(Lang::ZhCn)
        } else if tag == "en" || tag.starts_with("en-") {
            Some(Lang::En)
        } else {
            None
        }
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::ZhCn => &ZH,
            Lang::En => &EN,
        }
    }
}

/// The best supported language in an `Accept-Language` header, by quality.
pub fn from_accept_language(header: &str) -> Option<Lang> {
    let mut best: Option<(f32, usize, Lang)> = None;
    for (position, part) in header.split(',').enumerate() {
        let mut pieces = part.split(';');
        let Some(lang) = pieces.next().and_then(Lang::parse) else {
            continue;
        };
        let q = pieces
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        // Higher quality wins; on a tie, the earlier entry.
        if best.is_none_or(|(bq, bp, _)| q > bq || (q == bq && position < bp)) {
            best = Some((q, position, lang));
        }
    }
    best.map(|(_, _, l)| l)
}

/// The language for this request and whether `?lang=` asked to remember it.
pub fn negotiate(req: &HttpRequest) -> (Lang, bool) {
    let asked = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "lang")
        .and_then(|(_, v)| Lang::parse(&v));
    if let Some(lang) = asked {
        return (lang, true);
    }
    if let Some(lang) = req.cookie(COOKIE).and_then(|c| Lang::parse(c.value())) {
        return (lang, false);
    }
    let header = req
        .headers()
        .get(actix_web::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(from_accept_language);
    (header.unwrap_or_default(), false)
}

pub struct Texts {
    pub pay_title: &'static str,
    pub sandbox_banner: &'static str,
    pub language: &'static str,
    pub order: &'static str,
    pub amount: &'static str,
    pub scan_alipay: &'static str,
    pub scan_wechat: &'static str,
    pub open_alipay: &'static str,
    pub open_wechat: &'static str,
    /// WeChat Native payment on the phone that shows the code: it cannot be scanned
    /// there, and WeChat opens no payment link from a browser.
    pub wechat_phone_note: &'static str,
    pub qr_label_alipay: &'static str,
    pub qr_label_wechat: &'static str,
    pub expires_in: &'static str,
    pub pay_before: &'static str,
    pub paid_title: &'static str,
    pub paid_body: &'static str,
    pub back_to_shop: &'static str,
    pub redirecting: &'static str,
    pub late_title: &'static str,
    pub late_body: &'static str,
    pub expired_title: &'static str,
    pub expired_body: &'static str,
    pub closed_title: &'static str,
    pub closed_body: &'static str,
    pub refunded_title: &'static str,
    pub refunded_body: &'static str,
    pub order_number: &'static str,
    pub order_not_found_title: &'static str,
    pub order_not_found_body: &'static str,
    pub page_not_found_title: &'static str,
    pub page_not_found_body: &'static str,
    pub sandbox_payment_not_found_title: &'static str,
    pub sandbox_payment_not_found_body: &'static str,
    pub invalid_title: &'static str,
    pub server_error_title: &'static str,
    pub server_error_body: &'static str,
    /// The database out of reach; a customer is told nothing about databases.
    pub unavailable_title: &'static str,
    pub unavailable_body: &'static str,
    pub reference: &'static str,
}

static ZH: Texts = Texts {
    pay_title: "付款",
    sandbox_banner: "沙箱模式 · 模拟支付，不会产生真实扣款",
    language: "语言",
    order: "订单",
    amount: "金额",
    scan_alipay: "请使用支付宝扫码付款",
    scan_wechat: "请使用微信扫码付款",
    open_alipay: "打开支付宝付款",
    open_wechat: "打开微信付款",
    wechat_phone_note: "微信扫码支付需要用另一台设备显示此二维码（例如电脑），再用手机微信扫一扫付款。",
    qr_label_alipay: "支付宝付款二维码",
    qr_label_wechat: "微信支付付款二维码",
    expires_in: "剩余付款时间",
    pay_before: "请在此时间前完成付款：",
    paid_title: "付款成功",
    paid_body: "感谢您的付款，商家已收到通知。",
    back_to_shop: "返回商家",
    redirecting: "即将自动返回商家……",
    late_title: "已在订单关闭后收到付款",
    late_body: "您的付款已收到，但订单此前已关闭。商家将为您发货或退款，请联系商家。",
    expired_title: "订单已过期",
    expired_body: "付款时间已过，请返回商家重新下单。",
    closed_title: "订单已关闭",
    closed_body: "此订单已关闭，无法继续付款。",
    refunded_title: "已退款",
    refunded_body: "此订单的付款已全部或部分退还。",
    order_number: "订单号",
    order_not_found_title: "找不到此订单",
    order_not_found_body: "链接可能有误，或订单不存在。请返回商家重试。",
    page_not_found_title: "找不到此页面",
    page_not_found_body: "链接可能有误，或页面已不存在。",
    sandbox_payment_not_found_title: "找不到此沙箱付款",
    sandbox_payment_not_found_body: "此沙箱付款链接无效。请重新扫描订单的二维码。",
    invalid_title: "无法保存",
    server_error_title: "出错了",
    server_error_body: "这是我们这边的问题，请稍后刷新重试。如果一直出现，请将下面的编号告知商家。",
    unavailable_title: "暂时无法访问",
    unavailable_body: "服务暂时不可用，请稍后刷新重试。",
    reference: "编号",
};

static EN: Texts = Texts {
    pay_title: "Pay",
    sandbox_banner: "Sandbox · simulated payment, no real money moves",
    language: "Language",
    order: "Order",
    amount: "Amount",
    scan_alipay: "Scan with Alipay to pay",
    scan_wechat: "Scan with WeChat to pay",
    open_alipay: "Open Alipay to pay",
    open_wechat: "Open WeChat to pay",
    wechat_phone_note: "WeChat Pay QR codes must be scanned with WeChat from another device: open this page on a computer, then scan the code with your phone.",
    qr_label_alipay: "QR code to pay with Alipay",
    qr_label_wechat: "QR code to pay with WeChat Pay",
    expires_in: "Time left to pay",
    pay_before: "Pay before",
    paid_title: "Payment received",
    paid_body: "Thank you. The merchant has been notified.",
    back_to_shop: "Back to the shop",
    redirecting: "Taking you back to the shop…",
    late_title: "Paid after the order was closed",
    late_body: "Your payment arrived after the order had closed. The merchant will fulfil or refund it; please contact them.",
    expired_title: "This order has expired",
    expired_body: "The time to pay has passed. Please go back to the shop and order again.",
    closed_title: "This order is closed",
    closed_body: "This order was closed and can no longer be paid.",
    refunded_title: "Refunded",
    refunded_body: "The payment for this order has been refunded in full or in part.",
    order_number: "Order number",
    order_not_found_title: "Order not found",
    order_not_found_body: "The link may be wrong, or the order does not exist. Please go back to the shop.",
    page_not_found_title: "Page not found",
    page_not_found_body: "The link may be wrong, or the page no longer exists.",
    sandbox_payment_not_found_title: "No such sandbox payment",
    sandbox_payment_not_found_body: "This sandbox payment link is not valid. Scan the order's QR code again.",
    invalid_title: "Not saved",
    server_error_title: "Something went wrong",
    server_error_body: "Something went wrong on our side. Please reload in a moment; if it keeps happening, give the merchant the reference below.",
    unavailable_title: "Temporarily unavailable",
    unavailable_body: "The service is temporarily unavailable. Please reload in a moment.",
    reference: "Reference",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_supported_language() {
        let cases = [
            ("zh-CN,zh;q=0.9,en;q=0.8", Some(Lang::ZhCn)),
            ("en-US,en;q=0.9,zh-CN;q=0.8", Some(Lang::En)),
            ("fr-FR, en;q=0.5, zh;q=0.7", Some(Lang::ZhCn)),
            ("de, fr", None),
            ("zh-TW;q=0, en;q=0.1", Some(Lang::En)),
            ("", None),
            ("en;q=abc", Some(Lang::En)),
        ];
        for (header, want) in cases {
            assert_eq!(from_accept_language(header), want, "{header:?}");
        }
    }
}
