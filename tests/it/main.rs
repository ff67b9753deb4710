//! One integration-test crate (one link step). Every test starts the real application
//! on 127.0.0.1:0 with its own SQLite file in a temp dir and talks HTTP to it.

mod admin;
mod admin_browser;
mod admin_overview_browser;
mod admin_staff;
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
mod notify_wechat;
mod oracle;
mod pages;
mod qr_decode;
mod receiver;
mod refunds;
mod sandbox_alipay;
mod sandbox_wechat;
mod stored;
mod supervisor;
mod transitions;
mod webdriver;
mod webhooks;
mod wechat_browser;
mod wechat_client;
mod wechat_oracle;
