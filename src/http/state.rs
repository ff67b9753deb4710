//! What every HTTP handler gets (one `web::Data<AppState>`): the core, plus what only
//! the pages need.

use std::ops::Deref;

use crate::core::Core;

#[derive(Clone)]
pub struct AppState {
    pub core: Core,
    /// Payments go to the built-in sandbox: checkout pages say no real money moves.
    pub sandbox_payments: bool,
}

impl Deref for AppState {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}
