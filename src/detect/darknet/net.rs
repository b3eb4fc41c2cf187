//! A darknet network built from its cfg and `.weights`, run with Candle.
//!
//! Reference: pjreddie/darknet `src/parser.c` (cfg keys, weight order) and the layer sources it
//! names. Takes a `(batch, channels, height, width)` f32 tensor in `[0, 1]`, RGB; returns the raw
//! tensors that enter every head (`[yolo]`/`[region]`: `(batch, anchors * (5 + classes), grid_h,
//! grid_w)`; `[detection]`: `(batch, inputs, 1, 1)`). Layers: `[convolutional]`, `[local]`,
//! `[connected]`, `[maxpool]`, `[route]` (with `groups`/`group_id`), `[reorg]`, `[upsample]`,
//! `[shortcut]`, `[dropout]`, and the heads `[detection]`, `[region]`, `[yolo]`.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};

use super::cfg::{Cfg, CfgError, Section};
use super::layers::{Connected, ConnectedSpec, Local, LocalSpec, Reorg};
use super::weights::{Param, WeightReader};
use crate::detect::conv::{FastConv, Fused};
use crate::detect::head::{DetectionHead, Head, RegionHead, YoloHead};
use crate::detect::pool::MaxPool;

/// Errors while building or running a darknet network.
#[derive(Debug, thiserror::Error)]
pub enum DarknetError {
    #[error(transparent)]
    Cfg(#[from] CfgError),
    #[error("{path}: {message}")]
    Weights { path: String, message: String },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Unsupported(String),
}

/// Darknet activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Linear,
    Leaky,
    Relu,
    Logistic,
    Mish,
}

impl Activation {
    pub(crate) fn parse(sec: &Section, file: &str) -> Result<Self, CfgError> {
        let name: String = sec.get(file, "activation", "linear".to_string())?;
        Ok(match name.as_str() {
            "linear" => Self::Linear,
            "leaky" => Self::Leaky,
            "relu" => Self::Relu,
            "logistic" => Self::Logistic,
            "mish" => Self::Mish,
            other => {
                return Err(sec.error(
                    file,
                    format!("[{}] activation `{other}` is not supported", sec.kind),
                ));
            }
        })
    }

    pub(crate) fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Linear => Ok(x.clone()),
            // darknet's leaky slope is 0.1
            Self::Leaky => candle_nn::ops::leaky_relu(x, 0.1),
            Self::Relu => x.relu(),
            Self::Logistic => candle_nn::ops::sigmoid(x),
            // x·tanh(softplus(x)); exp overflowing to inf still gives tanh = 1, so x passes through
            Self::Mish => x.mul(&(x.exp()? + 1.0)?.log()?.tanh()?),
        }
    }
}

/// `[convolutional]` with batch norm already folded into `weight`/`bias`.
#[derive(Debug)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
    activation: Activation,
    /// The fused CPU path (weights packed at load), when the activation can be fused.
    fast: Option<FastConv>,
}

impl Conv {
    /// Candle's own conv + bias + activation: every device, and the reference for the fast path.
    fn forward_plain(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, self.groups)?;
        let y = y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)?;
        self.activation.apply(&y)
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.fast {
            Some(fast) if x.device().is_cpu() => x.contiguous()?.apply_op1_no_bwd(fast),
            _ => self.forward_plain(x),
        }
    }
}

/// One layer of the network, in cfg order.
#[derive(Debug)]
enum Layer {
    Conv(Conv),
    /// darknet maxpool: `pad_lo` before, `pad_hi` after (size 2 / stride 1 pads right and bottom only).
    MaxPool(MaxPool),
    /// Concatenate (a channel group of) earlier outputs along channels.
    Route {
        layers: Vec<usize>,
        groups: usize,
        group_id: usize,
    },
    Upsample {
        stride: usize,
    },
    Shortcut {
        from: usize,
        activation: Activation,
    },
    /// Locally connected (YOLOv1): a convolution with its own kernel at every output position.
    Local(Local),
    /// Fully connected; output `(batch, outputs, 1, 1)`.
    Connected(Connected),
    /// darknet's space-to-depth (YOLOv2 passthrough), index for index as `reorg_cpu`.
    Reorg(Reorg),
    /// `[dropout]`: the identity at inference.
    Dropout,
    /// A detection head: passes its input through and records it as an output.
    Head,
}

impl Layer {
    fn kind(&self) -> &'static str {
        match self {
            Self::Conv(_) => "convolutional",
            Self::MaxPool(_) => "maxpool",
            Self::Route { .. } => "route",
            Self::Upsample { .. } => "upsample",
            Self::Shortcut { .. } => "shortcut",
            Self::Local(_) => "local",
            Self::Connected(_) => "connected",
            Self::Reorg(_) => "reorg",
            Self::Dropout => "dropout",
            Self::Head => "head",
        }
    }
}

/// Keys darknet reads for training only; accepted and ignored.
const NET_KEYS: &[&str] = &[
    "batch",
    "subdivisions",
    "width",
    "height",
    "channels",
    "momentum",
    "decay",
    "angle",
    "saturation",
    "exposure",
    "hue",
    "learning_rate",
    "burn_in",
    "max_batches",
    "policy",
    "steps",
    "scales",
    "mosaic",
    "max_chart_loss",
    "flip",
    "letter_box",
    "min_crop",
    "max_crop",
    "jitter",
    "power",
    "aspect",
    "gamma",
    "mixup",
    "blur",
    "cutmix",
    "adam",
    "B1",
    "B2",
    "eps",
    "step",
    "rate",
    "time_steps",
    "optimized_memory",
    "track",
    "augment_speed",
    "sequential_subdivisions",
    "try_fix_nan",
    "dynamic_minibatch",
    "inputs",
    "max_crop",
    "label_smooth_eps",
    "workspace_size_limit_MB",
    "adversarial_lr",
    "attention",
];
const CONV_KEYS: &[&str] = &[
    "batch_normalize",
    "filters",
    "size",
    "stride",
    "pad",
    "padding",
    "activation",
    "groups",
    "dilation",
    "stride_x",
    "stride_y",
    "binary",
    "xnor",
    "flipped",
    "dot",
];
const MAXPOOL_KEYS: &[&str] = &[
    "size",
    "stride",
    "padding",
    "stride_x",
    "stride_y",
    "maxpool_depth",
];
const ROUTE_KEYS: &[&str] = &["layers", "groups", "group_id", "stopbackward"];
const UPSAMPLE_KEYS: &[&str] = &["stride", "scale"];
const SHORTCUT_KEYS: &[&str] = &[
    "from",
    "activation",
    "weights_type",
    "weights_normalization",
];
const YOLO_KEYS: &[&str] = &[
    "mask",
    "anchors",
    "classes",
    "num",
    "jitter",
    "ignore_thresh",
    "truth_thresh",
    "random",
    "scale_x_y",
    "iou_thresh",
    "cls_normalizer",
    "iou_normalizer",
    "iou_loss",
    "nms_kind",
    "beta_nms",
    "max_delta",
    "resize",
    "new_coords",
    "counters_per_class",
    "label_smooth_eps",
    "objectness_smooth",
    "max",
];

const LOCAL_KEYS: &[&str] = &["filters", "size", "stride", "pad", "activation"];
const CONNECTED_KEYS: &[&str] = &["output", "activation", "batch_normalize"];
const DROPOUT_KEYS: &[&str] = &[
    "probability",
    "dropblock",
    "dropblock_size_rel",
    "dropblock_size_abs",
];
const REORG_KEYS: &[&str] = &["stride", "reverse", "flatten", "extra"];
const REGION_KEYS: &[&str] = &[
    "anchors",
    "bias_match",
    "classes",
    "coords",
    "num",
    "softmax",
    "jitter",
    "rescore",
    "object_scale",
    "noobject_scale",
    "class_scale",
    "coord_scale",
    "absolute",
    "thresh",
    "random",
    "tree",
    "map",
    "background",
    "log",
    "sqrt",
];
const DETECTION_KEYS: &[&str] = &[
    "classes",
    "coords",
    "rescore",
    "side",
    "num",
    "softmax",
    "sqrt",
    "jitter",
    "object_scale",
    "noobject_scale",
    "class_scale",
    "coord_scale",
    "random",
    "forced",
    "reorg",
];

/// The keys a layer kind accepts; `None` for a section vigil does not know.
fn layer_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "convolutional" | "conv" => CONV_KEYS,
        "maxpool" | "max" => MAXPOOL_KEYS,
        "route" => ROUTE_KEYS,
        "upsample" => UPSAMPLE_KEYS,
        "shortcut" => SHORTCUT_KEYS,
        "local" => LOCAL_KEYS,
        "connected" => CONNECTED_KEYS,
        "dropout" => DROPOUT_KEYS,
        "reorg" => REORG_KEYS,
        "yolo" => YOLO_KEYS,
        "region" => REGION_KEYS,
        "detection" => DETECTION_KEYS,
        _ => return None,
    })
}

/// Cheap structural check (no weights, no shapes): `[net]` first, every section a layer vigil
/// runs, every key one it understands. `vigil check` runs it on each pipeline's model.
pub fn check_sections(cfg: &Cfg) -> Result<(), CfgError> {
    let file = cfg.file.as_str();
    for (i, sec) in cfg.sections.iter().enumerate() {
        if i == 0 {
            if sec.kind != "net" && sec.kind != "network" {
                return Err(sec.error(
                    file,
                    format!("the first section must be [net], not [{}]", sec.kind),
                ));
            }
            sec.check_keys(file, NET_KEYS)?;
            continue;
        }
        match layer_keys(&sec.kind) {
            Some(keys) => sec.check_keys(file, keys)?,
            None => return Err(sec.error(file, format!("unknown layer [{}]", sec.kind))),
        }
    }
    Ok(())
}

/// Standard deviation gain of synthesized kernels: √2 before a rectifier keeps the signal's
/// scale, and a unit whose output is added back by a `[shortcut]` starts small (as in Fixup)
/// so 23 residual blocks do not compound.
fn synth_gain(activation: Activation, feeds_shortcut: bool) -> f32 {
    if feeds_shortcut {
        return 0.5;
    }
    match activation {
        Activation::Leaky | Activation::Relu | Activation::Mish => std::f32::consts::SQRT_2,
        Activation::Linear | Activation::Logistic => 1.0,
    }
}

/// A loaded darknet network.
#[derive(Debug)]
pub struct DarknetNet {
    layers: Vec<Layer>,
    heads: Vec<Head>,
    /// The type the network computes in (inputs are converted to it, heads come out in it).
    dtype: DType,
    /// Input size from `[net]`.
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

/// Shape of one layer's output, `(channels, height, width)`.
type Chw = (usize, usize, usize);

impl DarknetNet {
    /// Build from a cfg file and a darknet `.weights` file on `device`.
    pub fn load(
        cfg_path: &Path,
        weights_path: &Path,
        device: &Device,
    ) -> Result<Self, DarknetError> {
        let cfg = Cfg::load(cfg_path)?;
        let mut weights =
            WeightReader::open(weights_path).map_err(|message| DarknetError::Weights {
                path: weights_path.display().to_string(),
                message,
            })?;
        let net = Self::from_cfg(&cfg, &mut weights, device)?;
        let left = weights.remaining();
        if left != 0 {
            return Err(DarknetError::Weights {
                path: weights_path.display().to_string(),
                message: format!(
                    "{left} values left over after the last layer: these weights do not belong to {}",
                    cfg.file
                ),
            });
        }
        Ok(net)
    }

    /// Build `cfg` with parameters made up from `seed` ([`WeightReader::synth`]); also returns
    /// them as the bytes of a `.weights` file, so a reference tool can run the very same network.
    pub fn synthesize(
        cfg: &Cfg,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, Vec<u8>), DarknetError> {
        let mut w = WeightReader::synth(seed);
        let net = Self::from_cfg(cfg, &mut w, device)?;
        Ok((net, w.to_bytes()))
    }

    /// Build the network of a parsed cfg on `device`, either reading the weights or making
    /// them up ([`WeightReader::synth`]). The reader must then be exhausted for the weights to
    /// belong to the cfg (checked by [`load`](Self::load)).
    #[allow(
        clippy::too_many_lines,
        reason = "one arm per darknet section, layer and output shape side by side; shares its loader with the ONNX path of issue 16 once that lands"
    )]
    pub fn from_cfg(
        cfg: &Cfg,
        w: &mut WeightReader,
        device: &Device,
    ) -> Result<Self, DarknetError> {
        let file = cfg.file.as_str();
        let (net_sec, body) = cfg
            .sections
            .split_first()
            .filter(|(s, _)| s.kind == "net" || s.kind == "network")
            .ok_or_else(|| CfgError {
                file: file.to_string(),
                line: 1,
                message: "the first section must be [net]".into(),
            })?;
        net_sec.check_keys(file, NET_KEYS)?;
        let width: usize = net_sec.require(file, "width")?;
        let height: usize = net_sec.require(file, "height")?;
        let channels: usize = net_sec.get(file, "channels", 3)?;
        if width == 0 || height == 0 || channels == 0 {
            return Err(net_sec
                .error(
                    file,
                    "[net] width, height and channels must be positive".into(),
                )
                .into());
        }

        let mut layers = Vec::with_capacity(body.len());
        let mut shapes: Vec<Chw> = Vec::with_capacity(body.len());
        let mut heads = Vec::new();
        let mut prev: Chw = (channels, height, width);
        for (index, sec) in body.iter().enumerate() {
            // Resolve a layer reference (negative = relative to this layer), naming the line when bad.
            let resolve = |r: i64| -> Result<usize, CfgError> {
                let abs = if r < 0 { index as i64 + r } else { r };
                if abs < 0 || abs as usize >= index {
                    Err(sec.error(
                        file,
                        format!(
                            "[{}] refers to layer {r}, which does not exist before layer {index}",
                            sec.kind
                        ),
                    ))
                } else {
                    Ok(abs as usize)
                }
            };
            let feeds_shortcut = body.get(index + 1).is_some_and(|n| n.kind == "shortcut");
            let (layer, out) = match sec.kind.as_str() {
                "convolutional" | "conv" => {
                    sec.check_keys(file, CONV_KEYS)?;
                    let filters: usize = sec.require(file, "filters")?;
                    let size: usize = sec.get(file, "size", 1)?;
                    let stride: usize = sec.get(file, "stride", 1)?;
                    let pad: usize = sec.get(file, "pad", 0)?;
                    let padding: usize = if pad != 0 {
                        size / 2
                    } else {
                        sec.get(file, "padding", 0)?
                    };
                    let groups: usize = sec.get(file, "groups", 1)?;
                    let bn: usize = sec.get(file, "batch_normalize", 0)?;
                    let activation = Activation::parse(sec, file)?;
                    let (c, h, wd) = prev;
                    if filters == 0
                        || size == 0
                        || stride == 0
                        || groups == 0
                        || !c.is_multiple_of(groups)
                        || !filters.is_multiple_of(groups)
                    {
                        return Err(sec.error(file, format!("[convolutional] filters={filters} size={size} stride={stride} groups={groups} do not fit {c} input channels")).into());
                    }
                    if h + 2 * padding < size || wd + 2 * padding < size {
                        return Err(sec.error(file, format!("[convolutional] kernel {size} is larger than its {wd}x{h} input")).into());
                    }
                    let conv = load_conv(
                        w,
                        device,
                        ConvShape {
                            filters,
                            in_per_group: c / groups,
                            size,
                            bn: bn != 0,
                            gain: synth_gain(activation, feeds_shortcut),
                        },
                    )
                    .map_err(|message| sec.error(file, message))?;
                    let out = (
                        filters,
                        (h + 2 * padding - size) / stride + 1,
                        (wd + 2 * padding - size) / stride + 1,
                    );
                    let act = match activation {
                        Activation::Linear => Fused::Linear,
                        Activation::Leaky => Fused::Leaky(0.1f32.to_bits()),
                        Activation::Relu => Fused::Relu,
                        Activation::Logistic => Fused::Logistic,
                        Activation::Mish => Fused::Mish,
                    };
                    let fast = if device.is_cpu() {
                        Some(
                            FastConv {
                                weight: conv.0.flatten_all()?.to_vec1()?,
                                bias: conv.1.to_vec1()?,
                                c_out: filters,
                                c_in: c,
                                k: size,
                                stride,
                                padding,
                                groups,
                                act,
                                threads: rayon::current_num_threads(),
                                winograd: None,
                            }
                            .prepared(),
                        )
                    } else {
                        None
                    };
                    (
                        Layer::Conv(Conv {
                            weight: conv.0,
                            bias: conv.1,
                            stride,
                            padding,
                            groups,
                            activation,
                            fast,
                        }),
                        out,
                    )
                }
                "maxpool" | "max" => {
                    sec.check_keys(file, MAXPOOL_KEYS)?;
                    let size: usize = sec.get(file, "size", 2)?;
                    let stride: usize = sec.get(file, "stride", 1)?;
                    let padding: usize = sec.get(file, "padding", size.saturating_sub(1))?;
                    if size == 0 || stride == 0 {
                        return Err(sec
                            .error(file, "[maxpool] size and stride must be positive".into())
                            .into());
                    }
                    let (c, h, wd) = prev;
                    if h + padding < size || wd + padding < size {
                        return Err(sec
                            .error(
                                file,
                                format!(
                                    "[maxpool] window {size} is larger than its {wd}x{h} input"
                                ),
                            )
                            .into());
                    }
                    let out = (
                        c,
                        (h + padding - size) / stride + 1,
                        (wd + padding - size) / stride + 1,
                    );
                    (
                        Layer::MaxPool(MaxPool {
                            size,
                            stride,
                            pad_lo: padding / 2,
                            pad_hi: padding - padding / 2,
                        }),
                        out,
                    )
                }
                "route" => {
                    sec.check_keys(file, ROUTE_KEYS)?;
                    let refs: Vec<i64> = sec.list(file, "layers")?.unwrap_or_default();
                    if refs.is_empty() {
                        return Err(sec.error(file, "[route] needs `layers`".into()).into());
                    }
                    let groups: usize = sec.get(file, "groups", 1)?;
                    let group_id: usize = sec.get(file, "group_id", 0)?;
                    if groups == 0 || group_id >= groups {
                        return Err(sec
                            .error(
                                file,
                                format!(
                                    "[route] group_id={group_id} must be below groups={groups}"
                                ),
                            )
                            .into());
                    }
                    let layers = refs
                        .into_iter()
                        .map(&resolve)
                        .collect::<Result<Vec<_>, _>>()?;
                    let (_, h, wd) = shapes[layers[0]];
                    let mut c = 0;
                    for &l in &layers {
                        let (lc, lh, lw) = shapes[l];
                        if (lh, lw) != (h, wd) {
                            return Err(sec.error(file, format!("[route] joins layers of different sizes ({wd}x{h} and {lw}x{lh})")).into());
                        }
                        if !lc.is_multiple_of(groups) {
                            return Err(sec.error(file, format!("[route] layer {l} has {lc} channels, not divisible into {groups} groups")).into());
                        }
                        c += lc / groups;
                    }
                    (
                        Layer::Route {
                            layers,
                            groups,
                            group_id,
                        },
                        (c, h, wd),
                    )
                }
                "upsample" => {
                    sec.check_keys(file, UPSAMPLE_KEYS)?;
                    let stride: usize = sec.get(file, "stride", 2)?;
                    if stride == 0 {
                        return Err(sec
                            .error(file, "[upsample] stride must be positive".into())
                            .into());
                    }
                    let (c, h, wd) = prev;
                    (Layer::Upsample { stride }, (c, h * stride, wd * stride))
                }
                "shortcut" => {
                    sec.check_keys(file, SHORTCUT_KEYS)?;
                    let from = resolve(sec.require(file, "from")?)?;
                    if shapes[from] != prev {
                        return Err(sec
                            .error(
                                file,
                                format!(
                                    "[shortcut] from layer {from} has shape {:?}, this one {:?}",
                                    shapes[from], prev
                                ),
                            )
                            .into());
                    }
                    (
                        Layer::Shortcut {
                            from,
                            activation: Activation::parse(sec, file)?,
                        },
                        prev,
                    )
                }
                "local" => {
                    sec.check_keys(file, LOCAL_KEYS)?;
                    if !device.is_cpu() {
                        return Err(sec.error(file, format!("[local] (YOLOv1's locally connected layer) runs only on the CPU, not on {device:?}: use `device: cpu` for this model")).into());
                    }
                    let filters: usize = sec.require(file, "filters")?;
                    let size: usize = sec.get(file, "size", 1)?;
                    let stride: usize = sec.get(file, "stride", 1)?;
                    let pad: usize = sec.get(file, "pad", 0)?;
                    let activation = Activation::parse(sec, file)?;
                    let local = Local::load(
                        w,
                        prev,
                        &LocalSpec {
                            filters,
                            size,
                            stride,
                            pad: pad != 0,
                            activation,
                            gain: synth_gain(activation, feeds_shortcut),
                        },
                    )
                    .map_err(|m| sec.error(file, format!("[local] {m}")))?;
                    let out = local.out_shape();
                    (Layer::Local(local), out)
                }
                "connected" => {
                    sec.check_keys(file, CONNECTED_KEYS)?;
                    let outputs: usize = sec.require(file, "output")?;
                    let bn: usize = sec.get(file, "batch_normalize", 0)?;
                    let activation = Activation::parse(sec, file)?;
                    let (c, h, wd) = prev;
                    let fc = Connected::load(
                        w,
                        device,
                        c * h * wd,
                        &ConnectedSpec {
                            outputs,
                            bn: bn != 0,
                            activation,
                            gain: synth_gain(activation, feeds_shortcut),
                        },
                    )
                    .map_err(|m| sec.error(file, format!("[connected] {m}")))?;
                    (Layer::Connected(fc), (outputs, 1, 1))
                }
                "dropout" => {
                    sec.check_keys(file, DROPOUT_KEYS)?;
                    (Layer::Dropout, prev)
                }
                "reorg" => {
                    sec.check_keys(file, REORG_KEYS)?;
                    for key in ["reverse", "flatten", "extra"] {
                        if sec.get::<usize>(file, key, 0)? != 0 {
                            return Err(sec
                                .error(file, format!("[reorg] {key} is not supported"))
                                .into());
                        }
                    }
                    let stride: usize = sec.get(file, "stride", 1)?;
                    let reorg = Reorg::new(prev, stride, device)
                        .map_err(|m| sec.error(file, format!("[reorg] {m}")))?;
                    let out = reorg.out_shape();
                    (Layer::Reorg(reorg), out)
                }
                "yolo" => {
                    sec.check_keys(file, YOLO_KEYS)?;
                    let head = YoloHead::from_section(sec, file, prev, (width, height))?;
                    heads.push(Head::Yolo(head));
                    (Layer::Head, prev)
                }
                "region" => {
                    sec.check_keys(file, REGION_KEYS)?;
                    let head =
                        RegionHead::from_section(sec, file, prev, (width, height), cfg.dir())?;
                    heads.push(Head::Region(head));
                    (Layer::Head, prev)
                }
                "detection" => {
                    sec.check_keys(file, DETECTION_KEYS)?;
                    let (c, h, wd) = prev;
                    let head = DetectionHead::from_section(sec, file, c * h * wd, (width, height))?;
                    heads.push(Head::Detection(head));
                    (Layer::Head, prev)
                }
                other => {
                    return Err(sec.error(file, format!("unknown layer [{other}]")).into());
                }
            };
            tracing::debug!(index, kind = %sec.kind, ?out, "darknet layer");
            layers.push(layer);
            shapes.push(out);
            prev = out;
        }
        if heads.is_empty() {
            return Err(CfgError {
                file: file.to_string(),
                line: 1,
                message: "the network has no detection head ([yolo], [region] or [detection])"
                    .into(),
            }
            .into());
        }
        Ok(Self {
            layers,
            heads,
            dtype: DType::F32,
            width,
            height,
            channels,
        })
    }

    /// The detection heads, in output order.
    pub fn heads(&self) -> &[Head] {
        &self.heads
    }

    /// The network computing in `dtype` (`F16` halves memory traffic on a GPU): weights are
    /// converted once here, inputs at every call. The fused CPU kernels are f32 only, so other
    /// types run Candle's own ops. YOLOv1's `[local]` layer has only an f32 CPU kernel.
    pub fn with_dtype(mut self, dtype: DType) -> Result<Self, DarknetError> {
        for layer in &mut self.layers {
            match layer {
                Layer::Conv(c) => {
                    c.weight = c.weight.to_dtype(dtype)?;
                    c.bias = c.bias.to_dtype(dtype)?;
                    if dtype != DType::F32 {
                        c.fast = None;
                    }
                }
                Layer::Connected(fc) => fc.convert(dtype)?,
                Layer::Local(_) if dtype != DType::F32 => {
                    return Err(DarknetError::Unsupported(format!(
                        "[local] (YOLOv1) computes only in f32, not {dtype:?}"
                    )));
                }
                _ => {}
            }
        }
        self.dtype = dtype;
        Ok(self)
    }

    /// The type the network computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Run the network; returns one raw tensor per head (in the network's dtype), in `heads()`
    /// order.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        self.run(&x.to_dtype(self.dtype)?, true)
    }

    /// Like [`forward`](Self::forward) but with Candle's stock convolution everywhere: the
    /// reference the fused CPU path is tested against.
    pub fn forward_reference(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        self.run(x, false)
    }

    fn run(&self, x: &Tensor, fast: bool) -> candle_core::Result<Vec<Tensor>> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        let mut heads = Vec::with_capacity(self.heads.len());
        let mut cur = x.clone();
        // Per-layer timing for profiling: RUST_LOG=vigil::detect::darknet::net::layers=trace
        let profile =
            tracing::enabled!(target: concat!(module_path!(), "::layers"), tracing::Level::TRACE);
        for (index, layer) in self.layers.iter().enumerate() {
            let started = profile.then(std::time::Instant::now);
            cur = match layer {
                Layer::Conv(c) if fast => c.forward(&cur)?,
                Layer::Conv(c) => c.forward_plain(&cur)?,
                Layer::MaxPool(p) if fast && cur.device().is_cpu() && cur.dtype() == DType::F32 => {
                    cur.contiguous()?.apply_op1_no_bwd(p)?
                }
                Layer::MaxPool(p) => {
                    // Replicating the edge equals darknet's -inf padding: every window keeps at
                    // least one real value, and the copy never exceeds the value it copies.
                    let padded = if p.pad_lo + p.pad_hi > 0 {
                        cur.pad_with_same(2, p.pad_lo, p.pad_hi)?
                            .pad_with_same(3, p.pad_lo, p.pad_hi)?
                    } else {
                        cur.clone()
                    };
                    padded.max_pool2d_with_stride(p.size, p.stride)?
                }
                Layer::Route {
                    layers,
                    groups,
                    group_id,
                } => {
                    let parts = layers
                        .iter()
                        .map(|&l| {
                            let t = &outs[l];
                            if *groups == 1 {
                                Ok(t.clone())
                            } else {
                                let c = t.dim(1)? / groups;
                                t.narrow(1, group_id * c, c)
                            }
                        })
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    if parts.len() == 1 {
                        parts[0].clone()
                    } else {
                        Tensor::cat(&parts, 1)?
                    }
                }
                Layer::Upsample { stride } => {
                    let (_, _, h, w) = cur.dims4()?;
                    cur.upsample_nearest2d(h * stride, w * stride)?
                }
                Layer::Shortcut { from, activation } => {
                    activation.apply(&(&cur + &outs[*from])?)?
                }
                Layer::Local(l) => l.forward(&cur)?,
                Layer::Connected(fc) => fc.forward(&cur)?,
                Layer::Reorg(r) => r.forward(&cur)?,
                Layer::Dropout => cur,
                Layer::Head => {
                    heads.push(cur.clone());
                    cur
                }
            };
            if let Some(t) = started {
                tracing::trace!(target: concat!(module_path!(), "::layers"), index, kind = layer.kind(), shape = ?cur.dims(), us = t.elapsed().as_micros() as u64, "layer");
            }
            outs.push(cur.clone());
        }
        Ok(heads)
    }
}

/// What one convolution's weights look like in the file.
struct ConvShape {
    filters: usize,
    in_per_group: usize,
    size: usize,
    bn: bool,
    /// Scale of synthesized kernels (see [`synth_gain`]).
    gain: f32,
}

/// Read one convolution's weights in darknet order (biases, [scales, mean, variance], kernel) and fold
/// batch norm into the kernel and bias: `w' = w·γ/(σ+ε)`, `b' = β − μ·γ/(σ+ε)`.
fn load_conv(
    w: &mut WeightReader,
    device: &Device,
    s: ConvShape,
) -> Result<(Tensor, Tensor), String> {
    let n = s.filters;
    let biases = w.take(n, Param::Bias)?;
    let per_filter = s.in_per_group * s.size * s.size;
    let kernel_param = Param::Kernel {
        fan_in: per_filter,
        gain: s.gain,
    };
    let (mut kernel, bias) = if s.bn {
        let bn = BatchNorm::take(w, n)?;
        let mut kernel = w.take(n * per_filter, kernel_param)?;
        let bias = bn.fold(&mut kernel, &biases);
        (kernel, bias)
    } else {
        (w.take(n * per_filter, kernel_param)?, biases)
    };
    kernel.shrink_to_fit();
    let kernel = Tensor::from_vec(kernel, (n, s.in_per_group, s.size, s.size), device)
        .map_err(|e| e.to_string())?;
    let bias = Tensor::from_vec(bias, n, device).map_err(|e| e.to_string())?;
    Ok((
        kernel.to_dtype(DType::F32).map_err(|e| e.to_string())?,
        bias,
    ))
}

/// Batch-norm parameters as darknet stores them (γ, running mean, running variance).
pub(crate) struct BatchNorm {
    scales: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
}

impl BatchNorm {
    /// Read `n` channels' parameters.
    pub(crate) fn take(w: &mut WeightReader, n: usize) -> Result<Self, String> {
        Ok(Self {
            scales: w.take(n, Param::Scale)?,
            mean: w.take(n, Param::Mean)?,
            var: w.take(n, Param::Variance)?,
        })
    }

    /// Fold into a `(n, per_unit)` row-major weight matrix and return the folded bias:
    /// `w' = w·γ/(σ+ε)`, `b' = β − μ·γ/(σ+ε)`.
    pub(crate) fn fold(&self, weight: &mut [f32], biases: &[f32]) -> Vec<f32> {
        let n = biases.len();
        let per_unit = weight.len() / n.max(1);
        let mut bias = Vec::with_capacity(n);
        for f in 0..n {
            // darknet's normalize_cpu adds its epsilon to the standard deviation, not the variance
            let k = self.scales[f] / (self.var[f].sqrt() + 0.000001);
            for v in &mut weight[f * per_unit..(f + 1) * per_unit] {
                *v *= k;
            }
            bias.push(biases[f] - self.mean[f] * k);
        }
        bias
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unknown section, or an unknown key in a known one, is refused with its own line.
    #[test]
    fn unknown_sections_and_keys_name_their_line() {
        let text = "[net]\nwidth=32\nheight=32\n\n[region]\nclasses=2\nfoo=1\n";
        let e = check_sections(&Cfg::parse("a.cfg", text).unwrap()).unwrap_err();
        assert_eq!((e.line, e.message.contains("`foo`")), (7, true), "{e}");
        let text = "[net]\nwidth=32\nheight=32\n[maxpool]\n\n[bar]\n";
        let e = check_sections(&Cfg::parse("a.cfg", text).unwrap()).unwrap_err();
        assert_eq!(e.to_string(), "a.cfg:6: unknown layer [bar]");
    }

    /// A synthesized YOLOv2-style network builds from text alone, and the same seed gives the same
    /// bytes, which load back into a network with identical outputs.
    #[test]
    fn synthesized_weights_load_back() {
        let text = "[net]\nwidth=8\nheight=8\nchannels=3\n\
            [convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\nactivation=leaky\n\
            [reorg]\nstride=2\n\
            [convolutional]\nfilters=14\nsize=1\nactivation=linear\n\
            [region]\nanchors=1,1,2,2\nclasses=2\nnum=2\nsoftmax=1\n";
        let cfg = Cfg::parse("t.cfg", text).unwrap();
        let (net, bytes) = DarknetNet::synthesize(&cfg, 5, &Device::Cpu).unwrap();
        assert_eq!(
            bytes,
            DarknetNet::synthesize(&cfg, 5, &Device::Cpu).unwrap().1
        );
        let mut reader = WeightReader::from_bytes(&bytes).unwrap();
        let loaded = DarknetNet::from_cfg(&cfg, &mut reader, &Device::Cpu).unwrap();
        assert_eq!(reader.remaining(), 0);
        let x = Tensor::arange(0f32, 192.0, &Device::Cpu)
            .unwrap()
            .affine(1.0 / 192.0, 0.0)
            .unwrap()
            .reshape((1, 3, 8, 8))
            .unwrap();
        let a: Vec<f32> = net.forward(&x).unwrap()[0]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = loaded.forward(&x).unwrap()[0]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a.len(), 14 * 4 * 4);
        assert_eq!(a, b);
    }
}
