//! Translating `MountConfig` into fuser's session configuration.

use fuser::{Config, MountOption, SessionACL};

use crate::MountConfig;

/// The mount option that names the subtype, so the mount's type is `fuse.s3ql`.
///
/// A custom word rather than fuser's `Subtype`: fuser hands `Subtype` to fusermount3 and
/// mount_fusefs only, and its direct mount(2) as root (type `fuse`) would drop it and show
/// type `fuse`; a custom word reaches both the helpers and mount(2)'s data, where Linux
/// (since 5.4) takes `subtype=` as a fuse mount parameter.
const SUBTYPE: &str = "subtype=s3ql";

/// The fuser configuration for `config`: fsname, subtype `s3ql`, default_permissions,
/// `ro` if read-only, then the extra options; one request thread off Linux.
pub(crate) fn fuser_config(config: &MountConfig) -> Config {
    let mut options = vec![
        MountOption::FSName(config.fs_name.clone()),
        MountOption::CUSTOM(SUBTYPE.to_owned()),
        MountOption::DefaultPermissions,
    ];
    if config.read_only {
        options.push(MountOption::RO);
    }
    for option in config.extra_options.iter().map(|o| mount_option(o)) {
        if !options.contains(&option) {
            options.push(option);
        }
    }
    let mut fuser_config = Config::default();
    fuser_config.mount_options = options;
    fuser_config.acl = if config.allow_other {
        SessionACL::All
    } else if config.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    // fuser runs several request threads (each with its own /dev/fuse clone) only on Linux.
    let linux = cfg!(target_os = "linux");
    fuser_config.n_threads = Some(if linux { config.threads.max(1) } else { 1 });
    fuser_config.clone_fd = linux;
    fuser_config
}

/// The fuser option for one `-o` word. Words fuser knows become typed options, because
/// fuser turns those into mount(2) flags (and only a typed `dev`/`suid` lifts its default
/// `nodev`/`nosuid`); any other word is passed through as `CUSTOM`.
fn mount_option(word: &str) -> MountOption {
    match word {
        "auto_unmount" => MountOption::AutoUnmount,
        "default_permissions" => MountOption::DefaultPermissions,
        "dev" => MountOption::Dev,
        "nodev" => MountOption::NoDev,
        "suid" => MountOption::Suid,
        "nosuid" => MountOption::NoSuid,
        "ro" => MountOption::RO,
        "rw" => MountOption::RW,
        "exec" => MountOption::Exec,
        "noexec" => MountOption::NoExec,
        "atime" => MountOption::Atime,
        "noatime" => MountOption::NoAtime,
        "dirsync" => MountOption::DirSync,
        "sync" => MountOption::Sync,
        "async" => MountOption::Async,
        other => MountOption::CUSTOM(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MountConfig {
        MountConfig {
            fs_name: "local:///tmp/b".to_owned(),
            allow_other: false,
            allow_root: true,
            read_only: true,
            extra_options: vec!["noatime".into(), "dev".into(), "ro".into(), "x-y".into()],
            threads: 0,
        }
    }

    #[test]
    fn options_are_typed_and_deduplicated() {
        let c = fuser_config(&config());
        assert_eq!(
            c.mount_options,
            vec![
                MountOption::FSName("local:///tmp/b".into()),
                MountOption::CUSTOM(SUBTYPE.into()),
                MountOption::DefaultPermissions,
                MountOption::RO,
                MountOption::NoAtime,
                MountOption::Dev,
                MountOption::CUSTOM("x-y".into()),
            ]
        );
        assert_eq!(c.acl, SessionACL::RootAndOwner);
        assert_eq!(c.n_threads, Some(1));
    }

    #[test]
    fn allow_other_wins_over_allow_root() {
        let c = fuser_config(&MountConfig {
            allow_other: true,
            ..config()
        });
        assert_eq!(c.acl, SessionACL::All);
    }
}
