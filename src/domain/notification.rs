//! What kassa decided about a payment platform's notification.

use std::str::FromStr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Stored, not decided yet (only ever seen inside the transaction that decides).
    Received,
    Applied,
    /// Already applied, or nothing to change: acknowledged.
    Duplicate,
    Rejected,
    /// kassa could not decide (storage failed); the platform is asked to resend.
    Error,
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [
        Verdict::Received,
        Verdict::Applied,
        Verdict::Duplicate,
        Verdict::Rejected,
        Verdict::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Received => "received",
            Verdict::Applied => "applied",
            Verdict::Duplicate => "duplicate",
            Verdict::Rejected => "rejected",
            Verdict::Error => "error",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verdict::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown verdict {s:?}"))
    }
}
