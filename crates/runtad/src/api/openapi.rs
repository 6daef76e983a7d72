//! The OpenAPI 3.1 document, generated from the handlers and wire types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    admin, audits, checkpoints, deploy, egress, exec, exec_stream, files, image_build, images,
    runtimes, secrets,
};

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("rt_…")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Runta API", version = "1", description = "Self-hosted isolated runtimes for AI agents and applications."),
    paths(
        runtimes::create, runtimes::list, runtimes::get, runtimes::delete, runtimes::update,
        runtimes::start, runtimes::stop, runtimes::pause, runtimes::resume, runtimes::events,
        exec::exec, exec::exec_ws, exec_stream::exec_stream, files::read, files::write, files::list,
        checkpoints::create, checkpoints::list, checkpoints::get, checkpoints::delete,
        deploy::apply, deploy::delete, admin::create_tenant, admin::create_token,
        admin::list_tokens, admin::revoke_token, admin::rotate_token, admin::get_quota,
        admin::set_quota, admin::own_quota, audits::list,
        secrets::create, secrets::list, secrets::get_one, secrets::set, secrets::delete,
        secrets::create_runtime_binding, secrets::set_runtime_binding, secrets::replace_runtime_bindings,
        secrets::list_runtime_bindings, secrets::get_runtime_binding, secrets::delete_runtime_binding,
        secrets::list_all_bindings, secrets::get_any_binding, secrets::delete_any_binding,
        secrets::create_default, secrets::set_default, secrets::list_defaults, secrets::get_default,
        secrets::delete_default,
        audits::of_runtime, egress::get, egress::put,
        images::list, images::get, images::delete, images::pull, images::pull_status,
        images::gc, images::login, images::logins, images::logout,
        image_build::commit_runtime, image_build::commit_checkpoint, image_build::push,
        image_build::build,
    ),
    components(schemas(
        runta_api::ErrorBody, runta_api::ErrorDetail, runta_api::ErrorCode, runta_api::Runtime,
        runta_api::RuntimeStatus, runta_api::Action, runta_api::ClientFrame, runta_api::ServerFrame, runta_api::Event,
        runta_api::FileEntry, runta_api::Deployment, runta_api::SandboxSpec, runta_api::PlanLine,
        runta_api::CreateRuntimeBody, runta_api::UpdateRuntimeBody, runta_api::CreateCheckpointBody,
        runta_api::OfficialRuntimeFields, runta_api::Checkpoint,
        runta_api::Audit, runta_api::EgressPolicy, runta_api::EgressPolicyRequest,
        runta_api::Secret, runta_api::CreateSecretRequest, runta_api::SetSecretRequest,
        runta_api::SecretBinding, runta_api::CreateSecretBindingRequest, runta_api::ReplaceSecretStubsRequest,
        runta_api::BindingScope,
        runta_api::EgressPolicyView,
        runta_api::Image, runta_api::ImageLayer, runta_api::ImagePull, runta_api::PullImageRequest,
        runta_api::CommitRequest, runta_api::PushImageRequest, runta_api::ImagePush,
        runta_api::BuildEvent,
        runta_api::RegistryLogin, runta_api::RegistryLoginRequest, runta_api::ImageGc,
    )),
    modifiers(&Security),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// The document is built and serialised once: building it costs milliseconds
/// of CPU, and the route needs no token (a flood of it must not stall the
/// daemon, docs/security.md item 8).
pub async fn serve() -> impl axum::response::IntoResponse {
    static DOC: std::sync::OnceLock<axum::body::Bytes> = std::sync::OnceLock::new();
    let body = DOC
        .get_or_init(|| {
            serde_json::to_vec(&ApiDoc::openapi())
                .expect("the OpenAPI document serialises")
                .into()
        })
        .clone();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_schema_lists_its_allowed_actions() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        // `Runtime` flattens the official fields in, so it is an `allOf`.
        let runtime = &schemas["Runtime"];
        let field = runtime["allOf"]
            .as_array()
            .into_iter()
            .flatten()
            .chain([runtime])
            .map(|part| &part["properties"]["allowed_actions"])
            .find(|f| !f.is_null())
            .unwrap_or_else(|| panic!("no allowed_actions in {runtime}"));
        assert_eq!(
            field["items"]["$ref"], "#/components/schemas/Action",
            "{field}"
        );
        let names: Vec<&str> = schemas["Action"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let want: Vec<&str> = runta_api::Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names, want);
    }
}
