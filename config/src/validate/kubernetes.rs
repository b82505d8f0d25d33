//! The `[kubernetes]` section: the kubeconfig (must exist) and its context.

use super::Ctx;
use crate::model::Kubernetes;
use crate::raw::RawKubernetes;
use crate::units::Problem;

pub(super) fn kubernetes(cx: &mut Ctx<'_>, raw: &RawKubernetes) -> Kubernetes {
    let kubeconfig = raw
        .kubeconfig
        .as_ref()
        .map(|v| cx.file("kubernetes", "kubernetes.kubeconfig", Some(v), "", false));
    let context = raw.context.as_ref().and_then(|v| {
        if v.get_ref().trim().is_empty() {
            let p = Problem {
                message: "is empty".into(),
                hint: Some("name a context of the kubeconfig, or remove the key to use its current-context".into()),
            };
            cx.report(&v.span(), "kubernetes.context", p);
            return None;
        }
        if kubeconfig.is_none() {
            let p = Problem {
                message: "needs kubernetes.kubeconfig (the in-cluster service account has no contexts)".into(),
                hint: Some("set kubeconfig, or remove context".into()),
            };
            cx.report(&v.span(), "kubernetes.context", p);
        }
        Some(v.get_ref().clone())
    });
    Kubernetes {
        kubeconfig,
        context,
    }
}
