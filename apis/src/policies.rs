//! Crossplane management policies, parsed into what the provider and worker may do.

use serde::{Deserialize, Serialize};

/// One management policy as spelled in the API.
pub const OBSERVE: &str = "Observe";
/// See [`OBSERVE`].
pub const CREATE: &str = "Create";
/// See [`OBSERVE`].
pub const UPDATE: &str = "Update";
/// See [`OBSERVE`].
pub const DELETE: &str = "Delete";
/// See [`OBSERVE`].
pub const LATE_INITIALIZE: &str = "LateInitialize";
/// See [`OBSERVE`].
pub const ALL: &str = "*";

/// What a set of management policies allows. `[]` means paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    /// Refresh `atProvider` (always true unless paused).
    pub observe: bool,
    /// Create the SQL object when it is missing.
    pub create: bool,
    /// Correct drift.
    pub update: bool,
    /// Drop the SQL object when the managed resource is deleted (otherwise orphan it).
    pub delete: bool,
    /// Copy unset fields from the SQL object into the spec.
    pub late_initialize: bool,
}

/// Why a policy list is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not one of the five policies or `*`.
    #[error("unknown management policy {0:?}")]
    Unknown(String),
    /// Crossplane accepts only some combinations (reference/crossplane.md §1.7).
    #[error(
        "management policies {0:?} are not a supported combination: use [\"*\"], [\"Observe\"], [], or Observe plus any of Create, Update, Delete, LateInitialize where Delete or Create comes with Update or Create comes with Delete"
    )]
    Unsupported(Vec<String>),
}

impl Policies {
    /// Everything (`["*"]`, the default).
    pub const ALL: Self = Self {
        observe: true,
        create: true,
        update: true,
        delete: true,
        late_initialize: true,
    };

    /// Whether the list was empty (Crossplane pauses such resources).
    pub fn paused(&self) -> bool {
        *self == Self::default()
    }

    /// Parses a policy list the way crossplane-runtime's default supported set does.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, PolicyError> {
        let mut p = Self::default();
        for item in list {
            match item.as_ref() {
                ALL => p = Self::ALL,
                OBSERVE => p.observe = true,
                CREATE => p.create = true,
                UPDATE => p.update = true,
                DELETE => p.delete = true,
                LATE_INITIALIZE => p.late_initialize = true,
                other => return Err(PolicyError::Unknown(other.to_owned())),
            }
        }
        let supported = p.paused()
            || p == Self::ALL
            || (p.observe && Self::supported_combination(p.create, p.update, p.delete));
        if list.iter().any(|s| s.as_ref() == ALL) && list.len() > 1 {
            return Err(PolicyError::Unsupported(
                list.iter().map(|s| s.as_ref().to_owned()).collect(),
            ));
        }
        if !supported {
            return Err(PolicyError::Unsupported(
                list.iter().map(|s| s.as_ref().to_owned()).collect(),
            ));
        }
        Ok(p)
    }

    /// crossplane-runtime's default supported sets, with LateInitialize free to add: every
    /// Observe-based set except those that would delete or create without being able to keep
    /// the object in line (Observe+Delete, Observe+Update+Delete, Observe+Create alone is fine).
    fn supported_combination(create: bool, update: bool, delete: bool) -> bool {
        !matches!(
            (create, update, delete),
            (false, false, true) | (false, true, true)
        )
    }

    /// The list form, for writing into a WorkItem.
    pub fn to_list(&self) -> Vec<String> {
        if *self == Self::ALL {
            return vec![ALL.to_owned()];
        }
        [
            (self.observe, OBSERVE),
            (self.create, CREATE),
            (self.update, UPDATE),
            (self.delete, DELETE),
            (self.late_initialize, LATE_INITIALIZE),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_owned())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_table() {
        let cases: Vec<(&str, Vec<&str>, bool)> = vec![
            ("the default", vec!["*"], true),
            ("empty list pauses", vec![], true),
            ("observe-only import", vec!["Observe"], true),
            (
                "orphan on delete: everything but Delete",
                vec!["Observe", "Create", "Update", "LateInitialize"],
                true,
            ),
            (
                "report drift without fixing it",
                vec!["Observe", "Create", "Delete"],
                true,
            ),
            ("observe and correct only", vec!["Observe", "Update"], true),
            (
                "deleting what we cannot update is rejected, as in Crossplane",
                vec!["Observe", "Update", "Delete"],
                false,
            ),
            (
                "delete without create or update is rejected",
                vec!["Observe", "Delete"],
                false,
            ),
            (
                "anything without Observe is rejected",
                vec!["Create", "Update"],
                false,
            ),
            ("'*' mixed with others is ambiguous", vec!["*", "Observe"], false),
        ];
        for (why, list, ok) in cases {
            assert_eq!(Policies::parse(&list).is_ok(), ok, "{why}: {list:?}");
        }
        assert!(matches!(
            Policies::parse(&["Observe", "Destroy"]),
            Err(PolicyError::Unknown(_))
        ));
        assert!(Policies::parse::<&str>(&[]).unwrap().paused());
        assert_eq!(Policies::parse(&["*"]).unwrap().to_list(), vec!["*"]);
        let orphan = Policies::parse(&["Observe", "Create", "Update", "LateInitialize"]).unwrap();
        assert!(!orphan.delete && orphan.create);
        assert_eq!(Policies::parse(&orphan.to_list()).unwrap(), orphan);
    }
}
