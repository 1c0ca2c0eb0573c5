//! `ProviderConfigUsage`, written by hand around the generated field types.
//!
//! Crossplane puts `providerConfigRef` and `resourceRef` at the top level of a usage (no
//! `spec`), and kube's `CustomResource` derive needs a spec struct, so kopium generates only
//! the field types for this kind. This module supplies the object type and its
//! [`kube::Resource`] implementation.

use crate::{
    constants::{GROUP, VERSION},
    generated::providerconfigusages::{ProviderConfigUsageProviderConfigRef, ProviderConfigUsageResourceRef},
};
use k8s_openapi::NamespaceResourceScope;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Records that a managed resource uses a config; blocks the config's deletion while it exists.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfigUsage {
    /// Always `sqlserver.kubesql.io/v1alpha1`.
    #[serde(default = "api_version")]
    pub api_version: String,
    /// Always `ProviderConfigUsage`.
    #[serde(default = "kind")]
    pub kind: String,
    /// Standard metadata; the name is the managed resource's UID, its controller the resource.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The config in use.
    pub provider_config_ref: ProviderConfigUsageProviderConfigRef,
    /// The managed resource using it.
    pub resource_ref: ProviderConfigUsageResourceRef,
}

fn api_version() -> String {
    format!("{GROUP}/{VERSION}")
}

fn kind() -> String {
    "ProviderConfigUsage".to_owned()
}

impl ProviderConfigUsage {
    /// A usage with `apiVersion` and `kind` filled in.
    pub fn new(
        metadata: ObjectMeta,
        provider_config_ref: ProviderConfigUsageProviderConfigRef,
        resource_ref: ProviderConfigUsageResourceRef,
    ) -> Self {
        Self {
            api_version: api_version(),
            kind: kind(),
            metadata,
            provider_config_ref,
            resource_ref,
        }
    }
}

impl kube::Resource for ProviderConfigUsage {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("ProviderConfigUsage")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("providerconfigusages")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::providerconfigusages::ProviderConfigUsageProviderConfigRefKind;

    #[test]
    fn serializes_at_top_level_like_crossplane() {
        let usage = ProviderConfigUsage::new(
            ObjectMeta {
                name: Some("uid-1".into()),
                namespace: Some("team".into()),
                ..Default::default()
            },
            ProviderConfigUsageProviderConfigRef {
                kind: ProviderConfigUsageProviderConfigRefKind::ClusterProviderConfig,
                name: "default".into(),
            },
            ProviderConfigUsageResourceRef {
                api_version: "sqlserver.kubesql.io/v1alpha1".into(),
                kind: "Database".into(),
                name: "app".into(),
                uid: Some("uid-1".into()),
            },
        );
        let json = serde_json::to_value(&usage).unwrap();
        assert_eq!(json["apiVersion"], "sqlserver.kubesql.io/v1alpha1");
        assert_eq!(json["kind"], "ProviderConfigUsage");
        assert_eq!(json["providerConfigRef"]["kind"], "ClusterProviderConfig");
        assert_eq!(json["resourceRef"]["kind"], "Database");
        assert!(json.get("spec").is_none());
        assert_eq!(
            <ProviderConfigUsage as kube::Resource>::api_version(&()),
            "sqlserver.kubesql.io/v1alpha1"
        );
    }
}
