//! XTS-AES-256 through AWS-LC's EVP interface (its AES-NI / VAES+AVX-512 assembly, chosen at
//! run time). AWS-LC offers XTS only with 512-bit keys, so XTS-AES-128 stays on the RustCrypto
//! path in the parent module.
//!
//! The FFI is confined to this file. An `EVP_CIPHER_CTX` holds the expanded keys and one data
//! unit's state, so it serves one thread at a time: contexts are copied from a keyed template
//! into a small pool and lent to each call. AWS-LC's `EVP_CIPHER_CTX_free` zeroes the key
//! schedule (`OPENSSL_free` cleanses every allocation it frees).
#![allow(unsafe_code)]

use aws_lc_sys as ffi;
use std::ptr::{self, NonNull};
use std::sync::Mutex;

/// One owned `EVP_CIPHER_CTX`.
struct Ctx(NonNull<ffi::EVP_CIPHER_CTX>);

// SAFETY: a context is plain heap data owned by this handle; it is used by one thread at a
// time (taken out of the pool under its mutex), and AWS-LC keeps no thread affinity in it.
unsafe impl Send for Ctx {}

impl Ctx {
    fn new() -> Option<Ctx> {
        // SAFETY: allocates a fresh context, or returns null on allocation failure.
        NonNull::new(unsafe { ffi::EVP_CIPHER_CTX_new() }).map(Ctx)
    }

    fn as_ptr(&self) -> *mut ffi::EVP_CIPHER_CTX {
        self.0.as_ptr()
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_CIPHER_CTX_new and is freed once, here.
        unsafe { ffi::EVP_CIPHER_CTX_free(self.as_ptr()) }
    }
}

/// Keyed contexts for one direction: a template that is never used for data (copied only
/// when the pool is empty, under its own lock), and the pool.
struct Direction {
    template: Mutex<Ctx>,
    pool: Mutex<Vec<Ctx>>,
}

impl Direction {
    fn new(key: &[u8], encrypt: bool) -> Option<Direction> {
        let template = Ctx::new()?;
        // SAFETY: template is a valid context; EVP_aes_256_xts returns a static cipher; key
        // points to 64 readable bytes (checked by the caller); a null IV leaves the IV unset.
        let ok = unsafe {
            ffi::EVP_CipherInit_ex(
                template.as_ptr(),
                ffi::EVP_aes_256_xts(),
                ptr::null_mut(),
                key.as_ptr(),
                ptr::null(),
                i32::from(encrypt),
            )
        } == 1;
        if !ok {
            // e.g. CIPHER_R_XTS_DUPLICATED_KEYS: drop the error from AWS-LC's thread queue.
            // SAFETY: takes no arguments.
            unsafe { ffi::ERR_clear_error() };
            return None;
        }
        Some(Direction {
            template: Mutex::new(template),
            pool: Mutex::new(Vec::new()),
        })
    }

    /// A context keyed like the template: from the pool, or a fresh copy.
    fn take(&self) -> Ctx {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(ctx) = pooled {
            return ctx;
        }
        let ctx = Ctx::new().expect("AWS-LC: cannot allocate a cipher context");
        let template = self.template.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: both contexts are valid and neither is in use elsewhere; EVP_CTRL_COPY
        // re-points the XTS key pointers into the copy's own key schedule.
        let ok = unsafe { ffi::EVP_CIPHER_CTX_copy(ctx.as_ptr(), template.as_ptr()) } == 1;
        drop(template);
        assert!(ok, "AWS-LC: cannot copy an XTS cipher context");
        ctx
    }

    fn give_back(&self, ctx: Ctx) {
        self.pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ctx);
    }
}

/// XTS-AES-256 keyed by a 64-byte key (Key1 || Key2, IEEE 1619 order).
pub(super) struct Xts256 {
    enc: Direction,
    dec: Direction,
}

impl Xts256 {
    /// None when AWS-LC refuses the key (equal halves: `CIPHER_R_XTS_DUPLICATED_KEYS`).
    pub(super) fn new(key: &[u8]) -> Option<Xts256> {
        assert_eq!(key.len(), 64, "XTS-AES-256 takes a 64-byte key");
        Some(Xts256 {
            enc: Direction::new(key, true)?,
            dec: Direction::new(key, false)?,
        })
    }

    /// En- or decrypts `buf` in place, sector k with tweak `first_iv + k * iv_step` (plain64).
    /// The caller has checked the geometry (whole sectors of 512..=4096 bytes).
    pub(super) fn run(
        &self,
        buf: &mut [u8],
        sector_size: usize,
        first_iv: u64,
        iv_step: u64,
        encrypt: bool,
    ) {
        let dir = if encrypt { &self.enc } else { &self.dec };
        let ctx = dir.take();
        let mut iv_sector = first_iv;
        for sector in buf.chunks_exact_mut(sector_size) {
            let p = sector.as_mut_ptr();
            // SAFETY: p points to the sector_size bytes of `sector`, read and written in
            // place (the same pointer for input and output).
            unsafe { one_sector(&ctx, p, p, sector_size, iv_sector) };
            iv_sector = iv_sector.wrapping_add(iv_step);
        }
        dir.give_back(ctx);
    }

    /// Like `run`, reading `src` and writing `dst` (same length).
    pub(super) fn run_into(
        &self,
        src: &[u8],
        dst: &mut [u8],
        sector_size: usize,
        first_iv: u64,
        iv_step: u64,
        encrypt: bool,
    ) {
        assert_eq!(src.len(), dst.len());
        let dir = if encrypt { &self.enc } else { &self.dec };
        let ctx = dir.take();
        let mut iv_sector = first_iv;
        for (i, o) in src
            .chunks_exact(sector_size)
            .zip(dst.chunks_exact_mut(sector_size))
        {
            // SAFETY: i and o are sector_size bytes each, from a shared and an exclusive
            // borrow, so they do not overlap.
            unsafe { one_sector(&ctx, i.as_ptr(), o.as_mut_ptr(), sector_size, iv_sector) };
            iv_sector = iv_sector.wrapping_add(iv_step);
        }
        dir.give_back(ctx);
    }
}

/// One data unit: `sector_size` bytes from `input` to `output` under plain64 IV `iv_sector`.
///
/// # Safety
/// `input` must point to `sector_size` readable bytes and `output` to `sector_size` writable
/// bytes; the two ranges are the same (in place) or do not overlap.
unsafe fn one_sector(
    ctx: &Ctx,
    input: *const u8,
    output: *mut u8,
    sector_size: usize,
    iv_sector: u64,
) {
    let len = i32::try_from(sector_size).expect("sector size fits an int");
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&iv_sector.to_le_bytes());
    let mut out_len = 0i32;
    // SAFETY: ctx is keyed and used by this thread alone (taken from the pool); a null cipher
    // and key with enc = -1 only set the 16-byte IV, which `iv` provides. The update reads
    // `len` bytes at `input` and writes `len` bytes at `output`, as the caller guarantees
    // (in place is allowed by AWS-LC), and writes one int to out_len.
    let ok = unsafe {
        ffi::EVP_CipherInit_ex(
            ctx.as_ptr(),
            ptr::null(),
            ptr::null_mut(),
            ptr::null(),
            iv.as_ptr(),
            -1,
        ) == 1
            && ffi::EVP_CipherUpdate(ctx.as_ptr(), output, &mut out_len, input, len) == 1
    };
    assert!(ok && out_len == len, "AWS-LC XTS failed on a whole sector");
}
