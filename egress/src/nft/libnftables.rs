//! nftables' own library (`libnftables.so.1`, from the `nftables` package
//! that provides `nft`), in process: the same JSON and text commands as
//! `nft -j -f -` / `nft -f -`, without starting a program.
//!
//! Why: an `nft` process costs its start and, after a change, the close of
//! its netfilter socket at exit (10-20 ms here, `docs/nftables-facts.md`);
//! a context kept for the sandbox's lifetime pays neither per change. Its
//! socket belongs to the network namespace of the thread that opens the
//! context, so open it from a thread inside the namespace. The context is
//! freed (closing its socket) on a thread of its own.
//!
//! Only six functions of the library's stable API (`nftables/libnftables.h`)
//! are used. The library is loaded (`dlopen`, by its soname) on first use,
//! so a process that never applies rules — a shim whose containers have no
//! egress — neither maps it nor needs it.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr::NonNull;
use std::sync::OnceLock;

/// `NFT_CTX_DEFAULT`.
const NFT_CTX_DEFAULT: u32 = 0;
/// `NFT_CTX_OUTPUT_JSON`: input that parses as JSON is taken as JSON
/// (anything else as nft's text syntax).
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;

/// The library's soname (Debian's `libnftables1`, a dependency of `nftables`).
const LIBRARY: &str = "libnftables.so.1";

/// The functions used, resolved once.
struct Api {
    ctx_new: unsafe extern "C" fn(u32) -> *mut c_void,
    ctx_free: unsafe extern "C" fn(*mut c_void),
    output_set_flags: unsafe extern "C" fn(*mut c_void, c_uint),
    buffer_error: unsafe extern "C" fn(*mut c_void) -> c_int,
    get_error_buffer: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    run_cmd_from_buffer: unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int,
    /// Kept loaded for the life of the process.
    _library: libloading::Library,
}

fn load() -> Result<Api, String> {
    let failed = |err: libloading::Error| format!("{LIBRARY}: {err} (install Debian's nftables)");
    // SAFETY: loading libnftables runs no code with preconditions of ours,
    // and the signatures below are those of its public header.
    unsafe {
        let library = libloading::Library::new(LIBRARY).map_err(failed)?;
        Ok(Api {
            ctx_new: *library.get(b"nft_ctx_new\0").map_err(failed)?,
            ctx_free: *library.get(b"nft_ctx_free\0").map_err(failed)?,
            output_set_flags: *library.get(b"nft_ctx_output_set_flags\0").map_err(failed)?,
            buffer_error: *library.get(b"nft_ctx_buffer_error\0").map_err(failed)?,
            get_error_buffer: *library.get(b"nft_ctx_get_error_buffer\0").map_err(failed)?,
            run_cmd_from_buffer: *library.get(b"nft_run_cmd_from_buffer\0").map_err(failed)?,
            _library: library,
        })
    }
}

fn api() -> std::io::Result<&'static Api> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load)
        .as_ref()
        .map_err(|err| std::io::Error::other(err.clone()))
}

/// One libnftables context, with its netfilter socket.
pub struct NftContext {
    api: &'static Api,
    ctx: NonNull<c_void>,
}

// SAFETY: a context has no thread affinity; `NftContext` is used by one
// thread at a time (`&mut self`), and callers keep it behind a Mutex.
unsafe impl Send for NftContext {}

impl std::fmt::Debug for NftContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NftContext")
    }
}

impl NftContext {
    /// A context whose socket is in the calling thread's namespace.
    pub fn open() -> std::io::Result<NftContext> {
        let api = api()?;
        // SAFETY: plain constructor; a null return is an allocation failure.
        let ctx = NonNull::new(unsafe { (api.ctx_new)(NFT_CTX_DEFAULT) })
            .ok_or_else(|| std::io::Error::other("nft_ctx_new failed"))?;
        // SAFETY: `ctx` is a live context.
        unsafe {
            (api.output_set_flags)(ctx.as_ptr(), NFT_CTX_OUTPUT_JSON);
            (api.buffer_error)(ctx.as_ptr());
        }
        Ok(NftContext { api, ctx })
    }

    /// Runs `commands` (a JSON batch or nft text) as one transaction;
    /// the error is what `nft` would have printed.
    pub fn run(&mut self, commands: &str) -> Result<(), String> {
        let buffer = CString::new(commands).map_err(|_| "the commands contain a NUL byte".to_owned())?;
        // SAFETY: `ctx` is live and used by this thread only; `buffer` is a
        // NUL-terminated string that outlives the call.
        let status = unsafe { (self.api.run_cmd_from_buffer)(self.ctx.as_ptr(), buffer.as_ptr()) };
        if status == 0 {
            return Ok(());
        }
        // SAFETY: with error buffering on, the context owns a NUL-terminated
        // error buffer, valid until the next command; copied out at once.
        let message = unsafe {
            let text = (self.api.get_error_buffer)(self.ctx.as_ptr());
            if text.is_null() {
                String::new()
            } else {
                CStr::from_ptr(text).to_string_lossy().trim().to_owned()
            }
        };
        Err(if message.is_empty() {
            format!("libnftables returned {status}")
        } else {
            message
        })
    }
}

/// Frees the context on a thread of its own: closing its socket after a
/// change waits 10-20 ms.
struct Freed(&'static Api, NonNull<c_void>);
// SAFETY: the context moves to the thread that frees it and is not used again.
unsafe impl Send for Freed {}

impl Drop for NftContext {
    fn drop(&mut self) {
        let freed = Freed(self.api, self.ctx);
        let free = move || {
            let freed = freed;
            // SAFETY: the context is freed exactly once, here.
            unsafe { (freed.0.ctx_free)(freed.1.as_ptr()) }
        };
        if let Err(err) = std::thread::Builder::new().name("nft-free".into()).spawn(free) {
            tracing::warn!(%err, "freeing an nftables context on the caller's thread");
            // The closure was not run: nothing to do but leak it (the
            // process keeps one socket) rather than risk a double free.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_command_reports_nfts_message() {
        // Parsing fails before anything reaches the kernel: no root needed.
        let mut context = NftContext::open().unwrap();
        let err = context.run("add tabel inet x").unwrap_err();
        assert!(err.contains("syntax error") || err.contains("Error"), "{err}");
    }
}
