//! The two Kalman filters of the tracking literature, in f64 like their reference implementations.
//!
//! - [`XyahKalman`] (ByteTrack, DeepSORT): state `(cx, cy, a, h, vcx, vcy, va, vh)`, noise scaled by
//!   the box height (`σ_position = 1/20`, `σ_velocity = 1/160`).
//! - [`SortKalman`] (SORT, OC-SORT): state `(cx, cy, s = w·h, r = w/h, vcx, vcy, vs)` with filterpy's
//!   fixed noise as SORT sets it, Joseph-form update.

use nalgebra::{SMatrix, SVector};

type V8 = SVector<f64, 8>;
type M8 = SMatrix<f64, 8, 8>;
type V4 = SVector<f64, 4>;
type M4 = SMatrix<f64, 4, 4>;
type M48 = SMatrix<f64, 4, 8>;
type V7 = SVector<f64, 7>;
type M7 = SMatrix<f64, 7, 7>;
type M47 = SMatrix<f64, 4, 7>;

const STD_POSITION: f64 = 1.0 / 20.0;
const STD_VELOCITY: f64 = 1.0 / 160.0;

/// ByteTrack's constant-velocity filter on `(cx, cy, aspect, height)`.
#[derive(Debug, Clone)]
pub struct XyahKalman {
    pub mean: V8,
    pub cov: M8,
}

fn motion8() -> M8 {
    let mut f = M8::identity();
    for i in 0..4 {
        f[(i, i + 4)] = 1.0;
    }
    f
}

fn update_mat8() -> M48 {
    let mut h = M48::zeros();
    for i in 0..4 {
        h[(i, i)] = 1.0;
    }
    h
}

impl XyahKalman {
    /// Start from a measurement `(cx, cy, a, h)`; velocities 0.
    pub fn initiate(z: [f64; 4]) -> Self {
        let h = z[3];
        let std = [
            2.0 * STD_POSITION * h,
            2.0 * STD_POSITION * h,
            1e-2,
            2.0 * STD_POSITION * h,
            10.0 * STD_VELOCITY * h,
            10.0 * STD_VELOCITY * h,
            1e-5,
            10.0 * STD_VELOCITY * h,
        ];
        Self {
            mean: V8::from_column_slice(&[z[0], z[1], z[2], z[3], 0.0, 0.0, 0.0, 0.0]),
            cov: M8::from_diagonal(&V8::from_iterator(std.iter().map(|s| s * s))),
        }
    }

    pub fn predict(&mut self) {
        let h = self.mean[3];
        let std = [
            STD_POSITION * h,
            STD_POSITION * h,
            1e-2,
            STD_POSITION * h,
            STD_VELOCITY * h,
            STD_VELOCITY * h,
            1e-5,
            STD_VELOCITY * h,
        ];
        let q = M8::from_diagonal(&V8::from_iterator(std.iter().map(|s| s * s)));
        let f = motion8();
        self.mean = f * self.mean;
        self.cov = f * self.cov * f.transpose() + q;
    }

    pub fn update(&mut self, z: [f64; 4]) {
        let h = self.mean[3];
        let std = [STD_POSITION * h, STD_POSITION * h, 1e-1, STD_POSITION * h];
        let r = M4::from_diagonal(&V4::from_iterator(std.iter().map(|s| s * s)));
        let hm = update_mat8();
        let projected_mean = hm * self.mean;
        let s = hm * self.cov * hm.transpose() + r;
        let pht = self.cov * hm.transpose(); // 8x4
        // K = P Hᵀ S⁻¹ via Cholesky of S (symmetric positive definite)
        let k = match s.cholesky() {
            Some(ch) => ch.solve(&pht.transpose()).transpose(),
            None => return,
        };
        let innovation = V4::from_column_slice(&z) - projected_mean;
        self.mean += k * innovation;
        self.cov -= k * s * k.transpose();
    }

    /// The box `fraction` of a step ahead under the constant-velocity model (state unchanged).
    pub fn xyxy_ahead(&self, fraction: f64) -> [f64; 4] {
        let mut k = self.clone();
        for i in 0..4 {
            k.mean[i] += fraction * k.mean[i + 4];
        }
        k.xyxy()
    }

    /// The box `[x1, y1, x2, y2]` of the current state.
    pub fn xyxy(&self) -> [f64; 4] {
        let (cx, cy, a, h) = (self.mean[0], self.mean[1], self.mean[2], self.mean[3]);
        let w = a * h;
        [
            cx - w / 2.0,
            cy - h / 2.0,
            cx - w / 2.0 + w,
            cy - h / 2.0 + h,
        ]
    }
}

/// SORT's filter on `(cx, cy, area, ratio)`.
#[derive(Debug, Clone)]
pub struct SortKalman {
    pub x: V7,
    pub p: M7,
}

fn motion7() -> M7 {
    let mut f = M7::identity();
    for i in 0..3 {
        f[(i, i + 4)] = 1.0;
    }
    f
}

fn h7() -> M47 {
    let mut h = M47::zeros();
    for i in 0..4 {
        h[(i, i)] = 1.0;
    }
    h
}

/// `[x1, y1, x2, y2]` → `(cx, cy, s, r)`; `eps` is added to the height in the ratio (OC-SORT uses 1e-6).
pub fn xyxy_to_xysr(b: [f64; 4], eps: f64) -> [f64; 4] {
    let w = b[2] - b[0];
    let h = b[3] - b[1];
    [b[0] + w / 2.0, b[1] + h / 2.0, w * h, w / (h + eps)]
}

/// `(cx, cy, s, r)` → `[x1, y1, x2, y2]`.
pub fn xysr_to_xyxy(x: &[f64]) -> [f64; 4] {
    let w = (x[2] * x[3]).sqrt();
    let h = x[2] / w;
    [
        x[0] - w / 2.0,
        x[1] - h / 2.0,
        x[0] + w / 2.0,
        x[1] + h / 2.0,
    ]
}

impl SortKalman {
    pub fn new(z: [f64; 4]) -> Self {
        let mut x = V7::zeros();
        x.fixed_rows_mut::<4>(0).copy_from_slice(&z);
        let p = M7::from_diagonal(&V7::from_column_slice(&[
            10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4,
        ]));
        Self { x, p }
    }

    fn q() -> M7 {
        M7::from_diagonal(&V7::from_column_slice(&[
            1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 1e-4,
        ]))
    }

    fn r() -> M4 {
        M4::from_diagonal(&V4::from_column_slice(&[1.0, 1.0, 10.0, 10.0]))
    }

    pub fn predict(&mut self) {
        let f = motion7();
        self.x = f * self.x;
        self.p = f * self.p * f.transpose() + Self::q();
    }

    /// filterpy's update with the Joseph-form covariance.
    pub fn update(&mut self, z: [f64; 4]) {
        let h = h7();
        let r = Self::r();
        let y = V4::from_column_slice(&z) - h * self.x;
        let pht = self.p * h.transpose();
        let s = h * pht + r;
        let Some(si) = s.try_inverse() else { return };
        let k = pht * si;
        self.x += k * y;
        let i_kh = M7::identity() - k * h;
        self.p = i_kh * self.p * i_kh.transpose() + k * r * k.transpose();
    }

    pub fn xyxy(&self) -> [f64; 4] {
        xysr_to_xyxy(self.x.as_slice())
    }

    /// The box `fraction` of a step ahead under the constant-velocity model (state unchanged).
    pub fn xyxy_ahead(&self, fraction: f64) -> [f64; 4] {
        let x = self.x;
        let area = (x[2] + fraction * x[6]).max(1e-6);
        xysr_to_xyxy(&[x[0] + fraction * x[4], x[1] + fraction * x[5], area, x[3]])
    }
}
