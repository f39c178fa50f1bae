//! Who is calling: an authenticated credential's id and [`Role`]. No I/O, no state: the
//! audit sink, the extractors and the services all name callers with these types.

use std::fmt;

use latchkey_core::ApiError;
use latchkey_core::validate::{Validator, is_workload_char};

/// What a credential may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything: control plane and data plane for every workload.
    Admin,
    /// The data plane of one workload only.
    Workload(String),
    /// Only `CompleteResourceTokenAuth` (the session binding service).
    Binding,
}

impl Role {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Self::Admin),
            "binding" => Ok(Self::Binding),
            _ => match s.strip_prefix("workload:") {
                Some(name) => {
                    let mut v = Validator::new();
                    if v.chars("role", name, 3, 255, is_workload_char, "[A-Za-z0-9_.-]+") {
                        Ok(Self::Workload(name.to_string()))
                    } else {
                        Err(format!(
                            "invalid workload name in role {s:?}: 3..255 characters of [A-Za-z0-9_.-]"
                        ))
                    }
                }
                None => Err(format!(
                    "unknown role {s:?}: expected admin, binding or workload:<name>"
                )),
            },
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Self::Admin => "admin".into(),
            Self::Binding => "binding".into(),
            Self::Workload(name) => format!("workload:{name}"),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub access_key_id: String,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// May this caller use the data plane for `workload`?
    pub fn require_workload(&self, workload: &str) -> Result<(), ApiError> {
        match &self.role {
            Role::Admin => Ok(()),
            Role::Workload(own) if own == workload => Ok(()),
            _ => Err(ApiError::AccessDenied(format!(
                "caller {} is not allowed to act for workload {workload:?}",
                self.access_key_id
            ))),
        }
    }

    /// Data-plane operations other than `CompleteResourceTokenAuth`.
    pub fn require_data_plane(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Binding => Err(ApiError::AccessDenied(
                "a binding credential may only call CompleteResourceTokenAuth".into(),
            )),
            _ => Ok(()),
        }
    }
}
