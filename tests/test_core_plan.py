"""tf_qnets.core.plan: the per-layer plan from layer descriptions alone (no framework)."""

import pytest

from tf_qnets.core.layer_kinds import output_kind
from tf_qnets.core.plan import Int8Spec, LayerInfo, QuantizerSpec, plan_layers


def cnn():
    return [
        LayerInfo("input", "InputLayer"),
        LayerInfo("c1", "Conv2D", "relu", has_weights=True),
        LayerInfo("bn", "BatchNormalization", has_weights=True),
        LayerInfo("relu", "ReLU"),
        LayerInfo("dw", "DepthwiseConv2D", "linear", has_weights=True),
        LayerInfo("leaky", "LeakyReLU"),
        LayerInfo("c2", "Conv2D", "relu", has_weights=True),
        LayerInfo("fc", "Dense", "linear", has_weights=True, is_model_output=True),
    ]


def test_inner_kernels_get_weight_quantizers_and_the_edges_stay_float():
    specs = plan_layers(cnn(), w_bits=3)
    assert sorted(specs) == ["c2", "dw"]
    assert specs["dw"].weight_attr == "depthwise_kernel" and specs["c2"].weight_attr == "kernel"
    assert specs["c2"].weight == QuantizerSpec(specs["c2"].weight.levels, "weights", "smooth", False)
    assert specs["c2"].weight.levels.levels == (-4, -2, -1, 0, 1, 2, 4)
    assert specs["c2"].output is None


def test_activations_are_unsigned_after_relu_signed_after_leaky_relu_and_outputs_stay_float():
    specs = plan_layers(cnn(), w_bits=None, a_bits=2)
    assert specs["relu"].output.levels.levels == (0, 1, 2, 3)
    assert specs["c1"].output.levels.levels == (0, 1, 2, 3)       # fused activation="relu"
    assert specs["leaky"].output.levels.levels == (-1, 0, 1)
    assert specs["c1"].weight is None and "fc" not in specs and "dw" not in specs
    assert specs["relu"].output.gradient == "smooth"


def test_binary_weights_default_to_the_wide_gradient():
    assert plan_layers(cnn(), w_bits=1)["c2"].weight.gradient == "wide"


@pytest.mark.parametrize("w_bits, gradient", [(2, "exact"), (3, "smooth"), (4, "smooth"), (8, "smooth")])
def test_ternary_weights_default_to_the_exact_gradient_wider_ones_to_the_smooth(w_bits, gradient):
    assert plan_layers(cnn(), w_bits=w_bits)["c2"].weight.gradient == gradient
    assert plan_layers(cnn(), w_bits=w_bits, gradient="wide")["c2"].weight.gradient == "wide"


def test_first_last_int8_gives_int8_specs_per_channel_except_depthwise():
    infos = [LayerInfo("dw", "DepthwiseConv2D", "relu", has_weights=True),
             LayerInfo("c", "Conv2D", "relu", has_weights=True),
             LayerInfo("fc", "Dense", "linear", has_weights=True)]
    specs = plan_layers(infos, w_bits=3, first_last="int8")
    assert specs["dw"].weight == Int8Spec(per_axis=False)
    assert specs["fc"].weight == Int8Spec(per_axis=True) and specs["fc"].output == Int8Spec()
    assert isinstance(specs["c"].weight, QuantizerSpec)


def test_per_layer_overrides_and_none_keeps_a_layer_float():
    specs = plan_layers(cnn(), w_bits=3, a_bits=4,
                        per_layer={"c2": {"w_bits": 2, "thresholds": "uniform"}, "relu": None})
    assert specs["c2"].weight.levels.levels == (-1, 0, 1)
    assert specs["c2"].weight_thresholds == "uniform" and specs["dw"].weight_thresholds == "auto"
    assert specs["dw"].output_thresholds == "uniform"          # "auto" activations start uniform
    assert "relu" not in specs


def test_unknown_layer_names_and_settings_are_refused_with_suggestions():
    with pytest.raises(ValueError, match=r"names layer 'c22'.*Did you mean \['c2'"):
        plan_layers(cnn(), per_layer={"c22": {"w_bits": 2}})
    with pytest.raises(ValueError, match=r"unknown settings \['bits'\]"):
        plan_layers(cnn(), per_layer={"c2": {"bits": 2}})
    with pytest.raises(TypeError, match="`exclude` must be a list"):
        plan_layers(cnn(), exclude="c2")


@pytest.mark.parametrize("kwargs,message", [
    ({"first_last": "int4"}, "`first_last` must be one of"),
    ({"thresholds": "median"}, "`thresholds` must be one of"),
    ({"activation_gradient": "steep"}, "`activation_gradient` must be one of"),
    ({"train_thresholds": 1}, "`train_thresholds` must be a bool"),
    ({"w_bits": None}, "Nothing to quantize"),
    ({"w_bits": 9}, "w_bits"),
])
def test_bad_options_name_the_argument(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        plan_layers(cnn(), **kwargs)


def test_a_layer_with_weights_and_no_quantizer_stays_float_with_one_warning():
    infos = cnn() + [LayerInfo("emb", "Embedding", has_weights=True)]
    with pytest.warns(UserWarning, match=r"'emb' \(Embedding\) have weights.*exclude=\['emb'\]"):
        plan_layers(infos, w_bits=3)


def test_a_nested_model_is_refused_naming_it():
    with pytest.raises(ValueError, match="'inner' is a nested model"):
        plan_layers(cnn() + [LayerInfo("inner", "Functional", is_model=True)], w_bits=3)


@pytest.mark.parametrize("kind,activation,slope,expected", [
    ("Conv2D", "relu6", 0.0, "unsigned"), ("Dense", "softmax", 0.0, None),
    ("Dense", "swish", 0.0, "signed"), ("ReLU", None, 0.1, "signed"), ("ReLU", None, 0.0, "unsigned"),
    ("Activation", "sigmoid", 0.0, "unsigned"), ("MaxPooling2D", None, 0.0, None),
])
def test_output_kind_follows_the_activation(kind, activation, slope, expected):
    assert output_kind(kind, activation, slope) == expected


def residual_block():
    """conv-BN-ReLU, conv-BN (linear) + a projection conv-BN, Add, ReLU; then a linear
    bottleneck conv-BN read by an Add that the next conv reads (MobileNetV2's pattern)."""
    infos = [
        LayerInfo("input", "InputLayer"),
        LayerInfo("c1", "Conv2D", "linear", has_weights=True),
        LayerInfo("bn1", "BatchNormalization", has_weights=True),
        LayerInfo("relu1", "ReLU"),
        LayerInfo("c2", "Conv2D", "linear", has_weights=True),
        LayerInfo("bn2", "BatchNormalization", has_weights=True),
        LayerInfo("proj", "Conv2D", "linear", has_weights=True),
        LayerInfo("bnp", "BatchNormalization", has_weights=True),
        LayerInfo("add", "Add"),
        LayerInfo("relu2", "ReLU"),
        LayerInfo("c3", "Conv2D", "linear", has_weights=True),
        LayerInfo("bn3", "BatchNormalization", has_weights=True),
        LayerInfo("add2", "Add"),
        LayerInfo("c4", "Conv2D", "relu", has_weights=True),
        LayerInfo("fc", "Dense", "linear", has_weights=True, is_model_output=True),
    ]
    readers = {"input": ["c1", "proj"], "c1": ["bn1"], "bn1": ["relu1"], "relu1": ["c2"],
               "c2": ["bn2"], "bn2": ["add"], "proj": ["bnp"], "bnp": ["add"],
               "add": ["relu2"], "relu2": ["c3", "add2"], "c3": ["bn3"], "bn3": ["add2"],
               "add2": ["c4"], "c4": ["fc"], "fc": []}
    return infos, readers


def test_tensors_an_integer_file_stores_in_int8_get_int8_outputs_when_activations_are_quantized():
    infos, readers = residual_block()
    specs = plan_layers(infos, w_bits=3, a_bits=3, readers=readers)
    int8 = sorted(name for name, spec in specs.items() if isinstance(spec.output, Int8Spec))
    # bn1 is fused into c1 + relu1; add into relu2's staircase; the kernels fold their BN.
    assert int8 == ["add2", "bn2", "bn3", "bnp"]
    assert specs["bn2"].weight is None and specs["add2"].weight is None
    assert isinstance(specs["relu2"].output, QuantizerSpec)


def test_no_int8_outputs_without_activation_quantizers_or_reader_information():
    infos, readers = residual_block()
    for specs in (plan_layers(infos, w_bits=3, readers=readers), plan_layers(infos, w_bits=3, a_bits=3)):
        assert not any(isinstance(spec.output, Int8Spec) for spec in specs.values())


def test_a_linear_kernel_read_by_an_add_gets_an_int8_output_and_excluded_layers_stay_float():
    infos = [LayerInfo("c1", "Conv2D", "relu", has_weights=True),
             LayerInfo("c2", "Conv2D", "linear", has_weights=True),
             LayerInfo("add", "Add"), LayerInfo("fc", "Dense", has_weights=True, is_model_output=True)]
    readers = {"c1": ["c2", "add"], "c2": ["add"], "add": ["fc"]}
    specs = plan_layers(infos, w_bits=3, a_bits=3, readers=readers)
    assert isinstance(specs["c2"].output, Int8Spec) and isinstance(specs["add"].output, Int8Spec)
    specs = plan_layers(infos, w_bits=3, a_bits=3, readers=readers, exclude=["add"])
    assert "add" not in specs


def test_a_batch_norm_before_every_quantized_layer_keeps_its_float_output():
    infos = [LayerInfo("input", "InputLayer"),
             LayerInfo("input_bn", "BatchNormalization", has_weights=True),
             LayerInfo("c1", "Conv2D", "relu", has_weights=True),
             LayerInfo("c2", "Conv2D", "linear", has_weights=True),
             LayerInfo("bn2", "BatchNormalization", has_weights=True),
             LayerInfo("add", "Add"), LayerInfo("relu", "ReLU"),
             LayerInfo("fc", "Dense", has_weights=True, is_model_output=True)]
    readers = {"input": ["input_bn"], "input_bn": ["c1"], "c1": ["c2", "add"], "c2": ["bn2"],
               "bn2": ["add"], "add": ["relu"], "relu": ["fc"], "fc": []}
    specs = plan_layers(infos, w_bits=3, a_bits=3, readers=readers)
    assert "input_bn" not in specs
    assert isinstance(specs["bn2"].output, Int8Spec)


@pytest.mark.parametrize("identity", [False, True])
def test_an_input_normalization_is_rounded_unless_it_is_the_identity(identity):
    """EfficientNet's front: with ImageNet statistics the file computes the Normalization as
    an int8 op of its own (rounded, as the Rescaling before it and the per-channel scaling
    after it); with mean 0 and variance 1 it emits nothing, so Keras must not round there."""
    infos = [LayerInfo("input", "InputLayer"), LayerInfo("scale", "Rescaling"),
             LayerInfo("norm", "Normalization", has_weights=True, is_identity=identity),
             LayerInfo("channel_scale", "Rescaling"),
             LayerInfo("c1", "Conv2D", "relu", has_weights=True),
             LayerInfo("fc", "Dense", has_weights=True, is_model_output=True)]
    readers = {"input": ["scale"], "scale": ["norm"], "norm": ["channel_scale"],
               "channel_scale": ["c1"], "c1": ["fc"], "fc": []}
    specs = plan_layers(infos, w_bits=3, a_bits=3, readers=readers)
    assert isinstance(specs["scale"].output, Int8Spec)
    assert isinstance(specs["channel_scale"].output, Int8Spec)
    assert ("norm" in specs) == (not identity)
    if not identity:
        assert isinstance(specs["norm"].output, Int8Spec) and specs["norm"].weight is None


def test_poolings_the_file_stores_in_int8_get_int8_outputs():
    """Squeeze-and-excitation's global pooling (read by a 1x1 convolution inside the network)
    and a transition's average pooling are int8 tensors in the file; the classifier's pooling
    (folded into the last layer) and a pooling whose windows pass the border are not."""
    infos = [LayerInfo("c1", "Conv2D", "relu", has_weights=True),
             LayerInfo("se_pool", "GlobalAveragePooling2D"),
             LayerInfo("se_reduce", "Conv2D", "relu", has_weights=True),
             LayerInfo("se_expand", "Conv2D", "sigmoid", has_weights=True),
             LayerInfo("se_mul", "Multiply"),
             LayerInfo("t_conv", "Conv2D", "linear", has_weights=True),
             LayerInfo("t_pool", "AveragePooling2D"),
             LayerInfo("bn", "BatchNormalization", has_weights=True), LayerInfo("relu", "ReLU"),
             LayerInfo("same_pool", "AveragePooling2D", pads_border=True),
             LayerInfo("c2", "Conv2D", "relu", has_weights=True),
             LayerInfo("pool", "GlobalAveragePooling2D"),
             LayerInfo("fc", "Conv2D", "linear", has_weights=True, is_model_output=True)]
    readers = {"c1": ["se_pool", "se_mul"], "se_pool": ["se_reduce"], "se_reduce": ["se_expand"],
               "se_expand": ["se_mul"], "se_mul": ["t_conv"], "t_conv": ["t_pool"],
               "t_pool": ["bn", "same_pool"], "bn": ["relu"], "relu": ["c2"],
               "same_pool": ["c2"], "c2": ["pool"], "pool": ["fc"], "fc": []}
    specs = plan_layers(infos, w_bits=3, a_bits=3, readers=readers)
    int8 = sorted(name for name, spec in specs.items() if isinstance(spec.output, Int8Spec))
    assert int8 == ["se_mul", "se_pool", "t_conv", "t_pool"]


def test_a_pooling_reshaped_for_squeeze_and_excitation_is_an_int8_tensor():
    """EfficientNet pools without keepdims and reshapes to 1x1 before its 1x1 convolution; the
    file stores the mean in int8 (MEAN), so Keras rounds it too."""
    infos = [LayerInfo("c", "Conv2D", "relu", has_weights=True),
             LayerInfo("pool", "GlobalAveragePooling2D"), LayerInfo("reshape", "Reshape"),
             LayerInfo("se", "Conv2D", "relu", has_weights=True),
             LayerInfo("head_pool", "GlobalAveragePooling2D"),
             LayerInfo("out", "Dense", "linear", has_weights=True, is_model_output=True)]
    readers = {"c": ["pool", "head_pool"], "pool": ["reshape"], "reshape": ["se"],
               "head_pool": ["out"]}
    specs = plan_layers(infos, w_bits=4, a_bits=4, first_last="low_bit", readers=readers)
    assert isinstance(specs["pool"].output, Int8Spec)
    assert "head_pool" not in specs          # the classifier's pooling folds into the Dense


def test_a_relu_read_only_by_a_max_pooling_is_quantized_after_the_pooling():
    """``maxpool(Q(x)) = Q(maxpool(x))`` (the staircase is non-decreasing): the pooling gets
    the ReLU's activation quantizer (a quarter of the elements; the pooling keeps for its
    backward the ReLU output the ReLU keeps anyway). A fused ReLU keeps its weight quantizer;
    a ReLU read by more than the pooling, or a pooling with settings of its own, stays."""
    infos = [LayerInfo("c1", "Conv2D", "linear", has_weights=True),
             LayerInfo("r1", "ReLU"), LayerInfo("p1", "MaxPooling2D"),
             LayerInfo("c2", "Conv2D", "relu", has_weights=True),
             LayerInfo("p2", "MaxPooling2D"),
             LayerInfo("c3", "Conv2D", "relu", has_weights=True),
             LayerInfo("p3", "MaxPooling2D"), LayerInfo("add", "Add"),
             LayerInfo("fc", "Dense", has_weights=True, is_model_output=True)]
    readers = {"c1": ["r1"], "r1": ["p1"], "p1": ["c2"], "c2": ["p2"], "p2": ["c3"],
               "c3": ["p3", "add"], "p3": ["add"], "add": ["fc"], "fc": []}
    specs = plan_layers(infos, w_bits=3, a_bits=3, readers=readers, first_last="low_bit")
    assert "r1" not in specs and specs["p1"].output.levels.num_steps == 7
    assert specs["c2"].output is None and specs["c2"].weight is not None
    assert specs["p2"].output.role == "activations"
    assert isinstance(specs["c3"].output, QuantizerSpec) and "p3" not in specs  # two readers
    assert list(specs).index("p1") < list(specs).index("c2")                   # model order
    kept = plan_layers(infos, w_bits=3, a_bits=3, readers=readers, first_last="low_bit",
                       per_layer={"p1": None})
    assert isinstance(kept["r1"].output, QuantizerSpec) and "p1" not in kept
