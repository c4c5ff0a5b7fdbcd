//! `zero2048 server`: the training server for remote workers.

use anyhow::Result;
use zero2048_train::{Budget, Progress, RunObserver, SelfPlay};

use crate::args::{RoleArg, ServerArgs};
use crate::commands::learn;
use crate::commands::train::{Display, print_summary};
use crate::storage;
use zero2048_server::{ApiServer, Role, ServerOptions};

/// Runs the command until Ctrl-C.
pub fn run(args: ServerArgs) -> Result<()> {
    let mut options = learn::options(&args.storage, &args.listen, &args.learn)?;
    options.publish_initial = true;
    options.api.require_token_for_latest |= args.require_token_for_latest;
    options.role = match args.role {
        RoleArg::All => Role::All,
        RoleArg::Api => Role::Api,
        RoleArg::Learner => Role::Learner,
    };
    let runtime = storage::runtime()?;
    if options.role == Role::Api {
        return serve_api(options, &runtime);
    }
    let mut server = learn::start(options, &runtime, false)?;
    let counters = server.run().counters();
    let status = server.adapter().status();
    eprintln!(
        "zero2048 server {} (protocol {}) on {} · revision {} · {} games learned · database {} · storage {}{}",
        zero2048_protocol::BUILD_VERSION,
        zero2048_protocol::PROTOCOL_VERSION,
        server.local_url(),
        counters.revision,
        counters.games,
        server.run().database(),
        status.backend,
        status.degraded.as_ref().map(|d| format!(" (degraded: {d})")).unwrap_or_default(),
    );
    eprintln!(
        "workers: `zero2048 worker --server {} --token T` · tokens: `zero2048 token add NAME`",
        server.local_url()
    );
    let stop =
        learn::two_stage_ctrl_c("stopping: publishing what was learned; press Ctrl-C again to quit at once")?;
    let display = Display::new();
    struct Show<'a>(&'a Display);
    impl RunObserver for Show<'_> {
        fn progress(&mut self, progress: &Progress) {
            self.0.show(progress)
        }
    }
    let summary = server
        .train(Budget::default(), &stop, SelfPlay::RemoteOnly, &mut Show(&display))
        .map_err(|e| anyhow::anyhow!(e))?;
    display.finish();
    server.shutdown();
    print_summary(&summary);
    Ok(())
}

/// `--role api`: serves until Ctrl-C.
fn serve_api(options: ServerOptions, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let database = options.database.clone();
    let server = ApiServer::start(options, runtime).map_err(|e| anyhow::anyhow!(e))?;
    eprintln!(
        "zero2048 API server {} (protocol {}) on {} · database {database} · the learner runs apart (--role learner)",
        zero2048_protocol::BUILD_VERSION,
        zero2048_protocol::PROTOCOL_VERSION,
        server.local_url(),
    );
    let stop = learn::two_stage_ctrl_c("stopping: answering the requests in progress")?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    server.shutdown();
    Ok(())
}
