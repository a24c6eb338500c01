//! `/diagnose`: one test per verdict (the verdict and the fix it offers) against the sandbox,
//! each checking that nothing was written; and the CLI command on the embedded default.

use crate::harness::okta;
use crate::pipeline::{env, env_with, test_policy, Env};
use o365_fixbot::domain::{OktaUserId, Upn};
use o365_fixbot::pipeline::diagnose::{Diagnosis, Fix, IdSource, Verdict};
use o365_fixbot::sandbox::scenario::*;
use o365_fixbot::sandbox::{MappingMode, SandboxOptions};

/// Diagnoses `upn` and asserts the sandbox saw reads only: every call a GET, but the token
/// requests (a POST that changes nothing in the tenant).
async fn diagnose(env: &Env, upn: &str) -> Diagnosis {
    env.sb.reset_calls();
    let d = env
        .engine
        .diagnose(&Upn::parse(upn).expect("a valid UPN"))
        .await
        .expect("the diagnosis reads both systems");
    let writes: Vec<String> = env
        .sb
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET" && !c.op.ends_with(".token"))
        .map(|c| format!("{} {} ({})", c.method, c.path_and_query, c.op))
        .collect();
    assert!(writes.is_empty(), "diagnose wrote: {writes:?}");
    let runs = env.engine.store().recent_runs(10).expect("the store reads");
    assert!(runs.is_empty(), "diagnose stored no run");
    d
}

#[tokio::test]
async fn an_ordinary_user_is_healthy() {
    let env = env().await;
    let d = diagnose(&env, &ordinary_upn(1)).await;
    assert_eq!(d.verdict, Verdict::Healthy);
    assert_eq!(d.fix, Fix::Nothing);
    let plus = diagnose(&env, PLUSID).await;
    assert_eq!(plus.verdict, Verdict::Healthy, "+ and / compare as held");
}

#[tokio::test]
async fn entra_missing_the_id_gets_okta_value_in_entra_only() {
    let env = env().await;
    let d = diagnose(&env, ADELE).await;
    assert_eq!(d.verdict, Verdict::EntraMissingId);
    assert_eq!(
        d.fix,
        Fix::EntraOnly {
            value: ADELE_OKTA_IMMUTABLE_ID.into()
        }
    );
    let entra = d.entra.as_ref().unwrap();
    assert_eq!(entra.immutable_id, None);
    assert_eq!(entra.authentication_type.as_deref(), Some("Federated"));
    let app = d.okta.as_ref().unwrap().app_user.as_ref().unwrap();
    assert_eq!(app.scope, "USER");
    assert_eq!(app.licenses, vec![LICENSES.to_owned()]);
    assert_eq!(d.id_source, IdSource::SetByHand);
}

#[tokio::test]
async fn differing_ids_get_okta_value_in_entra_only_unique_or_mapped() {
    let env = env().await;
    let d = diagnose(&env, MEGAN).await;
    assert_eq!(d.verdict, Verdict::Differ);
    assert_eq!(
        d.fix,
        Fix::EntraOnly {
            value: MEGAN_OKTA_IMMUTABLE_ID.into()
        }
    );
    assert!(d.why.contains("no other Entra user holds it"), "{}", d.why);

    let mapped = env_with(
        SandboxOptions {
            ordinary_users: 2,
            mapping: MappingMode::Ignore,
            ..SandboxOptions::default()
        },
        test_policy(),
    )
    .await;
    let d = diagnose(&mapped, ALEX).await;
    assert_eq!(d.verdict, Verdict::Differ);
    assert!(
        matches!(&d.id_source, IdSource::Mapped { expression } if !expression.is_empty()),
        "{:?}",
        d.id_source
    );
    assert_eq!(
        d.fix,
        Fix::EntraOnly {
            value: ALEX_OKTA_IMMUTABLE_ID.into()
        }
    );
    assert!(d.why.contains("mapping"), "{}", d.why);
}

#[tokio::test]
async fn an_unassigned_okta_user_is_assigned_by_a_person() {
    let env = env().await;
    let id = env.sb.okta_user_id(ALEX).expect("alex is in Okta");
    // Set-up, before the diagnosis counts calls: take alex off the app.
    okta(&env.sb)
        .unassign(&OktaUserId::parse(&id).unwrap())
        .await
        .expect("unassigned");
    let d = diagnose(&env, ALEX).await;
    assert_eq!(d.verdict, Verdict::OktaAppUserMissing);
    assert_eq!(d.fix, Fix::Outside);
    assert!(d.why.contains("not assigned"), "{}", d.why);
}

#[tokio::test]
async fn a_synced_user_is_fixed_in_ad() {
    let env = env().await;
    let d = diagnose(&env, LYNNE).await;
    assert_eq!(d.verdict, Verdict::SyncedFromAd);
    assert_eq!(d.fix, Fix::Outside);
    assert!(d.why.contains("Entra Connect"), "{}", d.why);
    assert!(d.entra.unwrap().sync_enabled);
}

#[tokio::test]
async fn a_group_assignment_is_fixed_by_a_person() {
    let env = env().await;
    let d = diagnose(&env, GRADY).await;
    assert_eq!(d.verdict, Verdict::AssignedThroughGroup);
    assert_eq!(d.fix, Fix::Outside);
    assert!(d.why.contains(LICENSED_GROUP), "{}", d.why);
}

#[tokio::test]
async fn a_user_in_one_system_only_is_missing_in_the_other() {
    let env = env().await;
    let d = diagnose(&env, NESTOR).await;
    assert_eq!(d.verdict, Verdict::MissingInOkta);
    assert_eq!(d.fix, Fix::Outside);
    assert!(d.okta.is_none() && d.entra.is_some());
    let d = diagnose(&env, GHOST).await;
    assert_eq!(d.verdict, Verdict::MissingInEntra);
    assert_eq!(d.fix, Fix::Outside);
    assert!(d.entra.is_none() && d.okta.is_some());
}

#[tokio::test]
async fn admins_and_protected_users_are_fixed_by_hand() {
    let env = env().await;
    for upn in [ISAIAH, ROHAN, BREAKGLASS] {
        let d = diagnose(&env, upn).await;
        assert_eq!(d.verdict, Verdict::AdminTarget, "{upn}");
        assert_eq!(d.fix, Fix::Outside, "{upn}");
    }
    let d = diagnose(&env, ROHAN).await;
    assert!(
        d.why.contains("Privileged Authentication Administrator"),
        "a role held through a group counts: {}",
        d.why
    );
}

#[tokio::test]
async fn the_discord_rendering_fits_one_message() {
    let env = env().await;
    for upn in [ADELE, MEGAN, GRADY, NESTOR, GHOST, ISAIAH, PRIYA] {
        let d = diagnose(&env, upn).await;
        let text = o365_fixbot::chat::diagnosis::diagnosis_discord(&d);
        assert!(text.chars().count() <= 2000, "{upn}: {}", text.len());
        assert!(text.contains(d.verdict.label()));
    }
}

fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_o365-fixbot"));
    c.env("RUST_LOG", "error").env_remove("FIXBOT_CONFIG");
    c
}

#[test]
fn the_cli_diagnoses_on_the_embedded_sandbox() {
    let out = bin()
        .args(["diagnose", MEGAN])
        .output()
        .expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Diagnosis of megan@contoso.com"),
        "{stdout}"
    );
    assert!(stdout.contains(MEGAN_ENTRA_IMMUTABLE_ID), "{stdout}");
    assert!(stdout.contains(MEGAN_OKTA_IMMUTABLE_ID), "{stdout}");
    assert!(
        stdout.contains("Verdict: Entra and Okta hold different ImmutableIDs"),
        "{stdout}"
    );
    assert!(stdout.contains("Fix: Entra-only repair"), "{stdout}");
}

#[test]
fn the_cli_refuses_a_malformed_upn() {
    let out = bin()
        .args(["diagnose", "not a upn"])
        .output()
        .expect("binary runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("user:") && stderr.contains('@'), "{stderr}");
}

#[test]
fn the_console_answers_diagnose_only_to_the_asker() {
    let script = "alice: /diagnose user:lynne@contoso.com\n\
                  alice: /diagnose user:not-a-upn\n\
                  alice: /diagnose\n";
    let stdout = crate::console::run_script(script);
    assert!(
        stdout.contains("fixbot: (only to alice) Diagnosis of lynne@contoso.com"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Verdict: synced from on-premises AD"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fixbot: (only to alice) user: 'not-a-upn' has no '@'"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the form is /diagnose user:<UPN>"),
        "{stdout}"
    );
    // Read-only: lynne is as seeded in the final state the demo prints.
    assert!(stdout.contains(LYNNE_ENTRA_IMMUTABLE_ID), "{stdout}");
}

#[tokio::test]
async fn okta_value_held_by_another_entra_user_needs_the_full_repair() {
    use o365_fixbot::directory::graph::UserPatch;
    use o365_fixbot::domain::EntraObjectId;
    let env = env().await;
    // Set-up, before the diagnosis counts calls: alex takes the value Okta sends for megan.
    let alex = env.sb.entra_user(ALEX).expect("alex is in Entra");
    crate::harness::graph(&env.sb)
        .update_user(
            &EntraObjectId::parse(&alex.id).unwrap(),
            &UserPatch {
                user_principal_name: None,
                on_premises_immutable_id: Some(MEGAN_OKTA_IMMUTABLE_ID.into()),
            },
        )
        .await
        .expect("alex updated");
    let d = diagnose(&env, MEGAN).await;
    assert_eq!(d.verdict, Verdict::Differ);
    assert_eq!(d.fix, Fix::Full, "{}", d.why);
    assert!(d.why.contains(ALEX), "names the holder: {}", d.why);
}

/// Console: `react 🔧` plans the fix the person's last diagnosis offered; a second person
/// approves; the next diagnosis is healthy. Without a diagnosis there is nothing to take.
#[test]
fn the_console_turns_a_diagnosis_into_a_plan() {
    let script = "carol: react 🔧\n\
                  alice: /diagnose user:megan@contoso.com\n\
                  alice: react 🔧\n\
                  bob: react ✅\n\
                  bob: /diagnose user:megan@contoso.com\n";
    let stdout = crate::console::run_script(script);
    assert!(
        stdout.contains("(only to carol) no fix is on offer"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(only to alice) react 🔧 to plan this fix"),
        "{stdout}"
    );
    assert!(stdout.contains("Mode: Entra-only"), "{stdout}");
    assert!(stdout.contains("Requested by alice"), "{stdout}");
    assert!(stdout.contains("approved by bob"), "{stdout}");
    assert!(stdout.contains("🎉 done"), "{stdout}");
    let last = stdout
        .rsplit("Diagnosis of megan@contoso.com")
        .next()
        .unwrap();
    assert!(last.contains("Verdict: healthy"), "{last}");
}
