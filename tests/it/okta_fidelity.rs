//! What a real Okta org does that the repair must follow: the Office 365 app user profile read
//! from the app user schema and the mappings (carried over, or refused with the reason), and the
//! check after the restore that Okta linked the user to Office 365 again.

use crate::harness::{calls_of, okta, sandbox};
use crate::pipeline::{env, env_with, plan, run, test_policy};
use o365_fixbot::chat::render::plan_message;
use o365_fixbot::pipeline::{PlanError, ProvisioningState, Refusal, RunOutcome};
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::SandboxOptions;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn the_app_user_schema_is_read_as_the_spec_shapes_it_and_reused_briefly() {
    let sb = sandbox().await;
    let o = okta(&sb);
    let schema = o.app_user_schema().await.expect("schema").value;
    assert!(schema.base.contains_key("userName"), "{schema:?}");
    let custom = |k: &str| schema.custom.get(k).expect(k).clone();
    assert!(!custom("licenses").read_only());
    assert!(!custom("immutableId").read_only());
    assert!(custom("lastSignInDateTime").read_only());
    assert_eq!(custom("licenses").kind.as_deref(), Some("array"));

    sb.reset_calls();
    let first = o.app_profile_rules().await.expect("rules").value;
    let again = o.app_profile_rules().await.expect("rules").value;
    assert_eq!(first, again);
    assert_eq!(calls_of(&sb, "okta.get_app_user_schema"), 1, "reused");
    assert_eq!(calls_of(&sb, "okta.list_mappings"), 1, "reused");

    // Like every app-scoped call, the schema needs an admin of the app.
    sb.set_okta_app_admin(false);
    let e = okta(&sb).app_user_schema().await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(403), Some("E0000006")));
}

#[tokio::test]
async fn mapped_and_read_only_attributes_are_left_out_and_licenses_and_roles_carried_over() {
    let env = env().await;
    let p = plan(&env, PRIYA, None).await.expect("plan");
    let c = p
        .carry_over
        .clone()
        .expect("a full repair carries the profile over");
    assert_eq!(c.entitlements["licenses"], json!(PRIYA_LICENSES));
    assert_eq!(c.entitlements["roles"], json!(PRIYA_ROLES));
    assert_eq!(c.mapped, ["firstName", "lastName"]);
    assert_eq!(c.read_only, ["lastSignInDateTime"]);
    let text = plan_message(&p, Duration::from_secs(600));
    assert!(
        text.contains("Carried over to the reassignment: licenses: ENTERPRISEPACK, EMS; roles: User, Helpdesk Administrator\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "Left to Okta: firstName, lastName (mapped); lastSignInDateTime (read-only)\n"
        ),
        "{text}"
    );

    let (s, _) = run(&env, &p).await;
    assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
    // The assignment as journalled before it was sent: what the sandbox accepted.
    let journal = env.engine.store().journal(&p.run.to_string()).unwrap();
    let assign = journal
        .iter()
        .find(|j| j.step == "7")
        .expect("step 7 journalled");
    let sent = assign.intended["profile"].as_object().expect("profile");
    for left_out in ["firstName", "lastName", "lastSignInDateTime"] {
        assert!(!sent.contains_key(left_out), "{left_out} sent: {sent:?}");
    }
    assert_eq!(sent["licenses"], json!(PRIYA_LICENSES));
    assert_eq!(sent["roles"], json!(PRIYA_ROLES));
    assert_eq!(sent["immutableId"], json!(p.new_immutable_id.as_str()));
    let app = env
        .sb
        .okta_app_user(p.okta_user_id.as_str())
        .expect("assigned");
    assert_eq!(app.profile["licenses"], json!(PRIYA_LICENSES));
    assert_eq!(app.profile["roles"], json!(PRIYA_ROLES));
}

#[tokio::test]
async fn a_profile_that_cannot_be_carried_over_is_refused_with_the_reason() {
    let env = env().await;
    let err = plan(&env, QUINN, None).await.unwrap_err();
    let PlanError::Refused(r @ Refusal::ProfileNotCarried { .. }) = &err else {
        panic!("{err:?}");
    };
    let text = r.to_string();
    assert!(
        text.contains(&format!(
            "the app user holds `{QUINN_UNDEFINED_ATTRIBUTE}` that the app user schema does not define"
        )),
        "{text}"
    );

    // Licenses made read-only in the Profile Editor: the user's licenses cannot be sent. (A new
    // tenant: the first engine's client reuses the schema it read for a minute.)
    let env2 = env_with(
        SandboxOptions {
            ordinary_users: 2,
            ..SandboxOptions::default()
        },
        test_policy(),
    )
    .await;
    assert!(env2.sb.set_app_schema_mutability("licenses", "READ_ONLY"));
    let err = plan(&env2, MEGAN, None).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "`licenses` is read-only in the app user schema, so the user's [\"{LICENSES}\"] cannot be sent with the assignment"
        )),
        "{err}"
    );
    for e in [&env, &env2] {
        assert_eq!(calls_of(&e.sb, "graph.update_user"), 0);
        assert_eq!(calls_of(&e.sb, "okta.unassign"), 0);
        assert!(e.sb.provisioning_writes().is_empty());
    }
}

#[tokio::test]
async fn the_summary_says_okta_confirmed_the_link() {
    let env = env().await;
    let p = plan(&env, MEGAN, None).await.expect("plan");
    let (s, _) = run(&env, &p).await;
    assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
    assert_eq!(s.provisioning, ProvisioningState::Restored);
    let want = format!(
        " Okta confirmed the link (status PROVISIONED, syncState SYNCHRONIZED, externalId {}).",
        p.entra_id
    );
    assert!(s.message.ends_with(&want), "{}", s.message);
    let journal = env.engine.store().journal(&p.run.to_string()).unwrap();
    let steps: Vec<&str> = journal.iter().map(|j| j.step.as_str()).collect();
    let resume = steps.iter().position(|s| *s == "9").expect("step 9");
    let link = steps
        .iter()
        .position(|s| *s == "9-link")
        .expect("link check");
    assert!(
        link > resume,
        "the check comes after the restore: {steps:?}"
    );
}

#[tokio::test]
async fn an_app_user_that_stays_syncing_is_reported_as_not_synced_within_the_window() {
    let mut policy = test_policy();
    policy.link_check_window = Duration::from_millis(700);
    let env = env_with(
        SandboxOptions {
            ordinary_users: 2,
            ..SandboxOptions::default()
        },
        policy,
    )
    .await;
    env.sb.set_hold_sync(true);
    let p = plan(&env, ALEX, None).await.expect("plan");
    let (s, _) = run(&env, &p).await;
    // The writes all landed and provisioning is back: only the link is still pending.
    assert_eq!(s.outcome, RunOutcome::Repaired, "{s:?}");
    assert_eq!(s.provisioning, ProvisioningState::Restored);
    assert!(
        s.message.ends_with(
            " Okta has not synced yet (state status STAGED, syncState SYNCING, externalId <none>)."
        ),
        "{}",
        s.message
    );
    assert!(!s.message.contains("confirmed"), "{}", s.message);
    let journal = env.engine.store().journal_rows(&p.run.to_string()).unwrap();
    let link = journal
        .iter()
        .find(|j| j.step == "9-link")
        .expect("link check journalled");
    let reads = link.result["reads"].as_u64().unwrap();
    assert!((2..=8).contains(&reads), "{reads} reads");
    let took = link.result["seconds"].as_f64().unwrap();
    assert!(took <= 1.5, "the window is 0.7 s, the check took {took} s");
    let app = env.sb.okta_app_user(p.okta_user_id.as_str()).unwrap();
    assert_eq!(app.sync_state.as_deref(), Some("SYNCING"));
    assert_eq!(app.external_id, None);
    assert_eq!(link.result["syncState"], Value::from("SYNCING"));
}
