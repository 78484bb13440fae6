//! OS users and groups by name and id, read from /etc/passwd and /etc/group. A static glibc's
//! getpwnam needs NSS modules an image may not have (crate::net), so the files are read first and
//! libc asked only by a dynamic binary, for users the files do not list (LDAP, sssd).

use crate::error::{Error, Result};

/// A field of the first `name:x:id:...` line matching `pred`.
fn find(text: &str, pred: impl Fn(&[&str]) -> bool) -> Option<Vec<String>> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && pred(&f)).then(|| f.iter().map(|s| s.to_string()).collect())
    })
}

/// The name of `uid` in an /etc/passwd text (`name:x:uid:gid:...`).
pub fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    find(passwd, |f| f[2].parse() == Ok(uid)).map(|f| f[0].clone())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The name of `uid`, or the number itself.
pub fn name_of(uid: u32) -> String {
    if let Some(n) = passwd_name(&read("/etc/passwd"), uid) {
        return n;
    }
    if !crate::net::IN_PROCESS {
        // SAFETY: getpwuid returns a pointer into static storage or NULL; copied at once.
        unsafe {
            let pw = libc::getpwuid(uid);
            if !pw.is_null()
                && let Ok(s) = std::ffi::CStr::from_ptr((*pw).pw_name).to_str()
            {
                return s.to_string();
            }
        }
    }
    uid.to_string()
}

/// A user's uid and primary gid.
pub fn user(name: &str) -> Option<(u32, u32)> {
    if let Some(f) = find(&read("/etc/passwd"), |f| f[0] == name) {
        return Some((f[2].parse().ok()?, f[3].parse().ok()?));
    }
    if crate::net::IN_PROCESS {
        return None;
    }
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or NULL; copied at once.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn group(name: &str) -> Option<u32> {
    if let Some(f) = find(&read("/etc/group"), |f| f[0] == name) {
        return f[2].parse().ok();
    }
    if crate::net::IN_PROCESS {
        return None;
    }
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer into static storage or NULL; copied at once.
    unsafe {
        let gr = libc::getgrnam(c.as_ptr());
        (!gr.is_null()).then(|| (*gr).gr_gid)
    }
}

/// `USER`, `USER:GROUP` or `UID:GID`: the uid and gid (a user's primary group by default).
pub fn parse_owner(spec: &str) -> Result<(u32, u32)> {
    let bad = |what: String| {
        Error::config(format!(
            "invalid value '{spec}' for option repo-owner: {what}"
        ))
        .hint("give USER, USER:GROUP or UID:GID of an existing user, e.g. postgres")
    };
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) => {
            let (uid, gid) = user(u).ok_or_else(|| bad(format!("no user '{u}'")))?;
            (uid, Some(gid))
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group(g).ok_or_else(|| bad(format!("no group '{g}'")))?,
        },
        None => primary.ok_or_else(|| bad("a numeric user needs a group: UID:GID".into()))?,
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines() {
        let p = "root:x:0:0:root:/root:/bin/sh\npostgres:x:70:70::/var/lib/postgresql:/bin/sh\n";
        assert_eq!(passwd_name(p, 70).as_deref(), Some("postgres"));
        assert_eq!(passwd_name(p, 0).as_deref(), Some("root"));
        assert_eq!(passwd_name(p, 7), None);
    }

    #[test]
    fn owners() {
        assert_eq!(parse_owner("0:0").unwrap(), (0, 0));
        assert_eq!(parse_owner("root").unwrap(), (0, 0));
        assert!(parse_owner("no-such-user-here").is_err());
        assert!(parse_owner("0").is_err());
        let e = parse_owner("root:no-such-group").unwrap_err();
        assert!(e.message.contains("no group"), "{e:?}");
    }
}
