//! `repo repair`: call the engine (`lifeboat::ops::repair`), print what it put right and
//! what it could not.

use crate::Ctx;
use lifeboat::error::{Error, ErrorKind, Result};
use lifeboat::ops::repair::{self, RepairOptions, RepairReport};

pub fn cmd_repair(ctx: &Ctx, dry_run: bool) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let report = repair::repair(&repo, &RepairOptions { dry_run })?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| Error::internal(e.to_string()))?
        );
    } else {
        print_repair(&report);
    }
    Ok(if report.ok {
        0
    } else {
        ErrorKind::Integrity.exit_code()
    })
}

fn print_repair(r: &RepairReport) {
    println!(
        "repair {}{}",
        r.location,
        if r.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
    println!(
        "  read {} backups, {} index files, {} packs ({}); replicas: {}",
        r.backups,
        r.index_files,
        r.packs,
        crate::bytes(r.bytes_read),
        if r.replicas.is_empty() {
            "none".to_string()
        } else {
            r.replicas.join(", ")
        }
    );
    for url in &r.replicas_unreachable {
        println!(
            "  ! replica {url} could not be opened (unreachable, or no repository there): \
             nothing was looked for on it"
        );
    }
    for f in &r.repaired {
        println!("  ✓ {}: {}", f.object, f.problem);
        println!(
            "      {}{}",
            if r.dry_run { "would be " } else { "" },
            f.action
        );
    }
    for u in &r.unrepaired {
        println!("  ✗ {}: {}", u.object, u.problem);
        if !u.backups.is_empty() {
            println!(
                "      backups that cannot be restored: {}",
                u.backups.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let objects = |n: usize| match n {
        1 => "1 object".to_string(),
        n => format!("{n} objects"),
    };
    match (r.repaired.len(), r.unrepaired.len()) {
        (0, 0) => println!("  nothing to repair: every object the backups need is intact"),
        (n, 0) if r.dry_run => println!(
            "  {} would be repaired; run without --dry-run to do it",
            objects(n)
        ),
        (n, 0) => println!(
            "  {} repaired; `lifeboat repo check --read-data` confirms",
            objects(n)
        ),
        (n, m) => {
            println!(
                "  {} {}repaired, {m} could not be",
                objects(n),
                if r.dry_run { "would be " } else { "" }
            );
            println!(
                "  hint: add a replica that holds good copies (`lifeboat replica add URL`) and run it again, \
                 or remove the backups named (`lifeboat forget ID`) and run `lifeboat prune`"
            );
        }
    }
}
