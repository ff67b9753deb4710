//! One integration-test crate (one link step). Every test starts the real application
//! on 127.0.0.1:0 with its own SQLite file in a temp dir and talks HTTP to it.

mod admin;
mod admin_browser;
mod alipay_gateway;
mod api_orders;
mod browser;
mod checkout;
mod cli;
mod expiry;
mod fake_provider;
mod gateway_standin;
mod helpers;
mod notify_alipay;
mod oracle;
mod pages;
mod qr_decode;
mod receiver;
mod refunds;
mod sandbox_alipay;
mod stored;
mod supervisor;
mod transitions;
mod webdriver;
mod webhooks;
