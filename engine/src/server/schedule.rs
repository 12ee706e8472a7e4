//! Cron schedules: each spec listed in `[server] scheduled` whose
//! `[schedule] cron` is set is submitted as a normal run at every firing
//! (UTC), with the trigger `schedule:<path>`.

use std::sync::Arc;

use super::App;
use super::index::Request;

/// Starts one timer task per scheduled spec. A spec that cannot be read,
/// names a path the server's policy refuses, or has no `[schedule]` is
/// reported and skipped; the others still fire.
pub fn start(app: &Arc<App>) {
    for path in &app.config.server.scheduled {
        let full = app.root.join(path);
        // The operator's schedules get the tenants' path policy: a scheduled
        // spec is often edited by others (a repository), and never needs the
        // home.
        let pipeline = match crate::spec::load_with(&full, &[], &app.policy) {
            Ok(p) => p,
            Err(errors) => {
                eprintln!(
                    "sluice: schedule {}: {}",
                    path.display(),
                    errors.first().map_or(String::new(), ToString::to_string)
                );
                continue;
            }
        };
        let Some(expr) = pipeline.schedule.clone() else {
            eprintln!(
                "sluice: schedule {}: the spec has no [schedule] cron",
                path.display()
            );
            continue;
        };
        let cron = match crate::spec::parse_cron(&expr) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sluice: schedule {}: {e}", path.display());
                continue;
            }
        };
        eprintln!("sluice: scheduled {} at `{expr}` (UTC)", path.display());
        let app = app.clone();
        let shown = path.display().to_string();
        let pipeline_path = full.display().to_string();
        let mut shutdown = app.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                let now = chrono::Utc::now();
                let Ok(next) = cron.find_next_occurrence(&now, false) else {
                    eprintln!("sluice: schedule {shown}: `{expr}` never fires again");
                    return;
                };
                let wait = (next - now).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                let request = Request::Path {
                    pipeline: pipeline_path.clone(),
                    params: Default::default(),
                };
                match super::live::submit(&app, "default", request, &format!("schedule:{shown}")) {
                    Ok(id) => eprintln!("sluice: schedule {shown} fired at {next}: run {id}"),
                    Err(e) => eprintln!("sluice: schedule {shown} fired at {next}: {}", e.message),
                }
            }
        });
    }
}
