//! Who is calling the management API and what they may do: the operator (IAM in AWS, the
//! admin token in the local stack), or a person signed in at the seller's identity provider
//! with a JWT whose claims carry a role and, for customers, the customer they are.

pub mod jwt;

use crate::domain::customers::CustomerId;

/// What a caller may do (docs/api.md, "Roles and sign-in").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Their own customer's record, keys and usage (`/v1/me/...`), nothing else.
    Customer,
    /// Every read of the operator's API; no writes.
    ReadOnly,
    /// Everything.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "read_only" => Some(Self::ReadOnly),
            "customer" => Some(Self::Customer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::ReadOnly => "read_only",
            Self::Customer => "customer",
        }
    }

    /// The role a claim value grants: a role name, or a list of them (identity providers put
    /// groups in arrays), of which the most capable known one counts. Unknown names grant
    /// nothing.
    pub fn from_claim(value: &serde_json::Value) -> Option<Self> {
        match value {
            serde_json::Value::String(s) => Self::parse(s),
            serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).filter_map(Self::parse).max(),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The customer a `customer` caller is (always set for that role, never for the others).
    pub customer: Option<CustomerId>,
    /// Who, for logs: the IAM principal, `admin-token`, or the token's issuer-scoped subject.
    pub subject: String,
}

impl Caller {
    /// The operator, authenticated by IAM or by the admin token.
    pub fn operator(subject: impl Into<String>) -> Self {
        Self { role: Role::Admin, customer: None, subject: subject.into() }
    }

    /// May read everything an operator may read.
    pub fn can_read(&self) -> bool {
        matches!(self.role, Role::Admin | Role::ReadOnly)
    }

    pub fn can_write(&self) -> bool {
        self.role == Role::Admin
    }

    /// The customer this caller acts as, when its role is `customer`.
    pub fn as_customer(&self) -> Option<&CustomerId> {
        self.customer.as_ref().filter(|_| self.role == Role::Customer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_claim_grants_its_role_or_the_most_capable_of_a_list() {
        assert_eq!(Role::from_claim(&json!("admin")), Some(Role::Admin));
        assert_eq!(Role::from_claim(&json!("read_only")), Some(Role::ReadOnly));
        assert_eq!(Role::from_claim(&json!(["customer", "read_only", "staff"])), Some(Role::ReadOnly));
        assert_eq!(Role::from_claim(&json!(["staff"])), None);
        assert_eq!(Role::from_claim(&json!("Admin")), None, "names are exact");
        assert_eq!(Role::from_claim(&json!(1)), None);
        assert_eq!(Role::from_claim(&json!({"role": "admin"})), None);
    }
}
