"""The regularized incomplete gamma functions, ``torch.special.gammainc`` / ``gammaincc`` (``torch.igamma`` /
``igammac``, ``x.igamma(other)``): P(a, x) = gamma(a, x) / Gamma(a) and Q = 1 - P, as ATen's ``calc_igamma`` /
``calc_igammac`` compute them (SciPy's port of Cephes' igam/igamc with Boost's Lanczos sum).

Each element takes one of four routes, chosen by a and x:
  - the edges: nan for a negative argument, 0 or 1 at a = 0, x = 0 and the infinities;
  - a and x close and a > 20: Temme's uniform asymptotic expansion (DLMF 8.12.3/8.12.4);
  - the power series of P (DLMF 8.11.4) where x is small against a, and the one of Q (DLMF 8.7.3) for x <= 1.1;
  - the continued fraction of Q (DLMF 8.9.2) for x > 1.1 beyond a; the other function is 1 minus it.

To give torch's bits every step runs in the kernel's C type (float32 for float, the 16-bit types computed in float
and rounded), the steps ATen writes with a double literal (``0.5 * erfc(...)``, ``x * 1.1 < a``) in float64, the
multiply-adds GCC contracts in torch's FMA build fused (``fastmath.multiply_add``), and C's libm called where ATen
calls it (logf, lgammaf, powf, erfcf ...: ``_libm``). The loops stop element by element, as the C loop does: each
runs over the elements still iterating."""
import math

import numpy as np

from .. import dtypes, fastmath, float32_math
from ..device import xp_of
from ..tensor import Function, Tensor, name_node, no_forward_formula
from .elementwise import _host_array, _promoted, _step, computes_in_float32, unbroadcast
from .special import _torch_exp as torch_exp, torch_lgamma

_F64 = np.float64
# Boost's Lanczos approximation (lanczos13m53) as a rational function of a: numerator and denominator, lowest power
# first
_LANCZOS_NUM = (
    0.006061842346248906525783753964555936883222, 0.5098416655656676188125178644804694509993,
    19.51992788247617482847860966235652136208, 449.9445569063168119446858607650988409623,
    6955.999602515376140356310115515198987526, 75999.29304014542649875303443598909137092,
    601859.6171681098786670226533699352302507, 3481712.15498064590882071018964774556468,
    14605578.08768506808414169982791359218571, 43338889.32467613834773723740590533316085,
    86363131.28813859145546927288977868422342, 103794043.1163445451906271053616070238554,
    56906521.91347156388090791033559122686859)
_LANCZOS_DENOM = (1., 66., 1925., 32670., 357423., 2637558., 13339535., 45995730., 105258076., 150917976.,
                  120543840., 39916800., 0.)
_LANCZOS_G = 6.024680040776729583740234375
_EXP1 = 2.718281828459045
_MAXITER = 2000

# the thresholds between the routes (ATen's static scalar_t: rounded to float for the float kernel)
_SMALL, _LARGE, _SMALLRATIO, _LARGERATIO = 20.0, 200.0, 0.3, 4.5


def _machine(real):
    """Cephes' MACHEP (the unit roundoff), MAXLOG (exp's overflow), BIG and BIGINV (the continued fraction's
    rescaling) for the dtype."""
    if real is np.float64:
        return real(1.11022302462515654042e-16), real(7.09782712893383996843e2), real(4.503599627370496e15), \
            real(2.22044604925031308085e-16)
    return real(5.9604644775390625e-8), real(88.72283905206835), real(16777216.), real(5.9604644775390625e-8)


# ---- C's libm, as ATen calls it ------------------------------------------------------------------------------
_LIBM = {}


def libm(name, *arrays):
    """C's ``name`` (its ``f`` twin for float32 arrays) of arrays of one dtype, element by element through ctypes:
    lgamma, erfc, expm1, log1p and pow are glibc's own (not correctly rounded; nothing else gives their bits)."""
    x = arrays[0]
    single = x.dtype == np.float32
    compiled_names = float32_math._C_FUNCTIONS if single else float32_math._C_FUNCTIONS64
    if len(arrays) == 1 and (name + "f" if single else name) in compiled_names:
        compiled = float32_math.c_function(name + "f", x) if single else float32_math.c_function64(name, x)
        return compiled.reshape(x.shape)  # (float32_math's compiled loop: the same C functions, faster)
    if single and name == "pow":
        return float32_math.c_function2("powf", *arrays).reshape(x.shape)
    key = name + ("f" if single else "")
    if key not in _LIBM:
        import ctypes
        import ctypes.util
        function = getattr(ctypes.CDLL(ctypes.util.find_library("m")), key)
        real = ctypes.c_float if single else ctypes.c_double
        function.restype, function.argtypes = real, [real] * len(arrays)
        _LIBM[key] = np.frompyfunc(function, len(arrays), 1)
    if not x.size:
        return np.empty(x.shape, x.dtype)
    return np.asarray(_LIBM[key](*arrays), dtype=x.dtype).reshape(x.shape)


def _fused(a, b, c):
    """``a * b + c`` where GCC contracts it in torch's FMA build: rounded once."""
    return fastmath.multiply_add(a, b, c)


def _unfused(a, b, c):
    """``a * b + c`` rounded twice: calc_igammac as calc_igamma calls it, out of line (see ``igamma_as_torch``)."""
    return a * b + c


def _in_double(value, real):
    """A step ATen writes with a double literal: float64 for the float kernel, rounded back to ``real`` where C
    assigns it to a float."""
    return np.asarray(value, _F64).astype(real)


# ---- the helpers -------------------------------------------------------------------------------------------
def _lanczos_sum_expg_scaled(a, fma):
    """Boost's Lanczos sum at a (SciPy's ``ratevl``): the two polynomials by Horner's rule (fused), in 1/a and from
    the highest coefficient for a > 1, then their ratio."""
    real = a.dtype.type
    outside = np.abs(a) > 1
    y = np.where(outside, real(1) / a, a)
    num = np.where(outside, real(_LANCZOS_NUM[-1]), real(_LANCZOS_NUM[0]))
    denom = np.where(outside, real(_LANCZOS_DENOM[-1]), real(_LANCZOS_DENOM[0]))
    for i in range(1, len(_LANCZOS_NUM)):
        num = fma(num, y, np.where(outside, real(_LANCZOS_NUM[-1 - i]), real(_LANCZOS_NUM[i])))
        denom = fma(denom, y, np.where(outside, real(_LANCZOS_DENOM[-1 - i]), real(_LANCZOS_DENOM[i])))
    return num / denom  # (the float kernel's pow(x, 0) * num / denom is a double 1 times: the same rounding)


def _prefactor(a, x, fma):
    """``_igam_helper_fac``: x^a e^-x / Gamma(a), from logs where a and x are far apart, else by the Lanczos sum
    (``exp(a - x) pow(x / fac, a)`` below 200, ``exp(a (log1p(d) - d) + x (0.5 - g) / fac)`` beyond)."""
    real = a.dtype.type
    _, maxlog, _, _ = _machine(real)
    with np.errstate(all="ignore"):
        far = np.abs(a - x).astype(_F64) > 0.4 * np.abs(a).astype(_F64)
        log_fac = fma(a, libm("log", x), -x) - libm("lgamma", a)
        from_logs = np.where(log_fac < -maxlog, real(0), libm("exp", log_fac))
        fac = _in_double((a + real(_LANCZOS_G)).astype(_F64) - 0.5, real)
        res = np.sqrt(fac / real(_EXP1)) / _lanczos_sum_expg_scaled(a, fma)
        below = (a < 200) & (x < 200)
        res_below = res * (libm("exp", a - x) * libm("pow", x / fac, a))
        num = _in_double((x - a - real(_LANCZOS_G)).astype(_F64) + 0.5, real)
        ratio = num / fac
        log1p_part = libm("log1p", ratio) - ratio
        if real is np.float64:  # (a * (...) + x * (0.5 - g) / fac: fused in double, the float kernel's sum is double)
            exponent = fma(a, log1p_part, x * (0.5 - _LANCZOS_G) / fac)
        else:
            exponent = (a * log1p_part).astype(_F64) + x.astype(_F64) * (0.5 - _F64(real(_LANCZOS_G))) / fac
        res_beyond = _in_double(res.astype(_F64) * libm("exp", exponent), real)
        return np.where(far, from_logs, np.where(below, res_below, res_beyond))


def _iterate(active, step):
    """Run ``step(rows, i)`` (rows: the indices still iterating, i the round) until it reports every element done (it
    returns the rows' done mask), at most ``_MAXITER`` times, as each element's C loop."""
    rows = np.flatnonzero(active)
    for i in range(_MAXITER):
        if not rows.size:
            break
        done = step(rows, i)
        rows = rows[~done]


def _lower_series(a, x, fma):
    """``_igam_helper_series``: P(a, x) = fac(a, x) / a (1 + x / (a + 1) + x^2 / ((a + 1)(a + 2)) + ...), summed
    until a term falls below MACHEP of the sum."""
    real = a.dtype.type
    machep = _machine(real)[0]
    ax = _prefactor(a, x, fma)
    r, c, ans = a.copy(), np.ones_like(a), np.ones_like(a)

    def step(rows, i):
        r[rows] += real(1)
        c[rows] *= x[rows] / r[rows]
        ans[rows] += c[rows]
        return c[rows] <= machep * ans[rows]

    with np.errstate(all="ignore"):
        _iterate(ax != 0, step)
        return np.where(ax == 0, real(0), ans * ax / a)


def _upper_series(a, x, fma):
    """``_igamc_helper_series``: Q(a, x) = -expm1(a log x - lgamma(1 + a)) - x^a / Gamma(a) sum over n >= 1 of
    (-x)^n / (n! (a + n)), without the cancellation of 1 - P."""
    real = a.dtype.type
    machep = _machine(real)[0]
    fac, total = np.ones_like(a), np.zeros_like(a)

    def step(rows, i):
        n = real(i + 1)
        fac[rows] *= -x[rows] / n
        term = fac[rows] / (a[rows] + n)
        total[rows] += term
        return np.abs(term) <= machep * np.abs(total[rows])

    with np.errstate(all="ignore"):
        _iterate(np.ones(a.shape, bool), step)
        logx = libm("log", x)
        term = -libm("expm1", fma(a, logx, -libm("lgamma", real(1) + a)))
        return fma(-libm("exp", fma(a, logx, -libm("lgamma", a))), total, term)


def _upper_continued_fraction(a, x, fma):
    """``_igamc_helper_continued_fraction``: Q(a, x) = fac(a, x) times Legendre's continued fraction, its
    convergents p_k / q_k by the three-term recurrence (rescaled when they pass BIG), until two agree to MACHEP."""
    real = a.dtype.type
    machep, _, big, biginv = _machine(real)
    ax = _prefactor(a, x, fma)
    with np.errstate(all="ignore"):
        y = _in_double(1.0 - a.astype(_F64), real)
        z = _in_double((x + y).astype(_F64) + 1.0, real)
        c = np.zeros_like(a)
        pkm2, qkm2 = np.ones_like(a), x.copy()
        pkm1, qkm1 = _in_double(x.astype(_F64) + 1.0, real), z * x
        ans = pkm1 / qkm1

        def step(rows, i):
            c[rows] += real(1)
            y[rows] += real(1)
            z[rows] += real(2)
            yc = y[rows] * c[rows]
            pk = fma(pkm1[rows], z[rows], -(pkm2[rows] * yc))
            qk = fma(qkm1[rows], z[rows], -(qkm2[rows] * yc))
            moved = qk != 0
            r = np.where(moved, pk / np.where(moved, qk, real(1)), ans[rows])
            t = np.where(moved, np.abs((ans[rows] - r) / r), real(1))
            ans[rows] = r
            pkm2[rows], pkm1[rows], qkm2[rows], qkm1[rows] = pkm1[rows], pk, qkm1[rows], qk
            rescale = np.abs(pk) > big
            for convergent in (pkm2, pkm1, qkm2, qkm1):
                convergent[rows[rescale]] *= biginv
            return t <= machep

        _iterate(ax != 0, step)
        return np.where(ax == 0, real(0), ans * ax)


# Temme's coefficients d[k][n] of the uniform asymptotic expansion (DLMF 8.12.3: the polynomials C_k(eta) in eta's
# powers), as SciPy tabulates them: 25 rows of 25
_TEMME = np.array([
    [-3.3333333333333333e-1, 8.3333333333333333e-2, -1.4814814814814815e-2, 1.1574074074074074e-3,
     3.527336860670194e-4, -1.7875514403292181e-4, 3.9192631785224378e-5, -2.1854485106799922e-6,
     -1.85406221071516e-6, 8.296711340953086e-7, -1.7665952736826079e-7, 6.7078535434014986e-9,
     1.0261809784240308e-8, -4.3820360184533532e-9, 9.1476995822367902e-10, -2.551419399494625e-11,
     -5.8307721325504251e-11, 2.4361948020667416e-11, -5.0276692801141756e-12, 1.1004392031956135e-13,
     3.3717632624009854e-13, -1.3923887224181621e-13, 2.8534893807047443e-14, -5.1391118342425726e-16,
     -1.9752288294349443e-15],
    [-1.8518518518518519e-3, -3.4722222222222222e-3, 2.6455026455026455e-3, -9.9022633744855967e-4,
     2.0576131687242798e-4, -4.0187757201646091e-7, -1.8098550334489978e-5, 7.6491609160811101e-6,
     -1.6120900894563446e-6, 4.6471278028074343e-9, 1.378633446915721e-7, -5.752545603517705e-8,
     1.1951628599778147e-8, -1.7543241719747648e-11, -1.0091543710600413e-9, 4.1627929918425826e-10,
     -8.5639070264929806e-11, 6.0672151016047586e-14, 7.1624989648114854e-12, -2.9331866437714371e-12,
     5.9966963656836887e-13, -2.1671786527323314e-16, -4.9783399723692616e-14, 2.0291628823713425e-14,
     -4.13125571381061e-15],
    [4.1335978835978836e-3, -2.6813271604938272e-3, 7.7160493827160494e-4, 2.0093878600823045e-6,
     -1.0736653226365161e-4, 5.2923448829120125e-5, -1.2760635188618728e-5, 3.4235787340961381e-8,
     1.3721957309062933e-6, -6.298992138380055e-7, 1.4280614206064242e-7, -2.0477098421990866e-10,
     -1.4092529910867521e-8, 6.228974084922022e-9, -1.3670488396617113e-9, 9.4283561590146782e-13,
     1.2872252400089318e-10, -5.5645956134363321e-11, 1.1975935546366981e-11, -4.1689782251838635e-15,
     -1.0940640427884594e-12, 4.6622399463901357e-13, -9.905105763906906e-14, 1.8931876768373515e-17,
     8.8592218725911273e-15],
    [6.4943415637860082e-4, 2.2947209362139918e-4, -4.6918949439525571e-4, 2.6772063206283885e-4,
     -7.5618016718839764e-5, -2.3965051138672967e-7, 1.1082654115347302e-5, -5.6749528269915966e-6,
     1.4230900732435884e-6, -2.7861080291528142e-11, -1.6958404091930277e-7, 8.0994649053880824e-8,
     -1.9111168485973654e-8, 2.3928620439808118e-12, 2.0620131815488798e-9, -9.4604966618551322e-10,
     2.1541049775774908e-10, -1.388823336813903e-14, -2.1894761681963939e-11, 9.7909989511716851e-12,
     -2.1782191880180962e-12, 6.2088195734079014e-17, 2.126978363279737e-13, -9.3446887915174333e-14,
     2.0453671226782849e-14],
    [-8.618882909167117e-4, 7.8403922172006663e-4, -2.9907248030319018e-4, -1.4638452578843418e-6,
     6.6414982154651222e-5, -3.9683650471794347e-5, 1.1375726970678419e-5, 2.5074972262375328e-10,
     -1.6954149536558306e-6, 8.9075075322053097e-7, -2.2929348340008049e-7, 2.956794137544049e-11,
     2.8865829742708784e-8, -1.4189739437803219e-8, 3.4463580499464897e-9, -2.3024517174528067e-13,
     -3.9409233028046405e-10, 1.8602338968504502e-10, -4.356323005056618e-11, 1.2786001016296231e-15,
     4.6792750266579195e-12, -2.1492464706134829e-12, 4.9088156148096522e-13, -6.3385914848915603e-18,
     -5.0453320690800944e-14],
    [-3.3679855336635815e-4, -6.9728137583658578e-5, 2.7727532449593921e-4, -1.9932570516188848e-4,
     6.7977804779372078e-5, 1.419062920643967e-7, -1.3594048189768693e-5, 8.0184702563342015e-6,
     -2.2914811765080952e-6, -3.252473551298454e-10, 3.4652846491085265e-7, -1.8447187191171343e-7,
     4.8240967037894181e-8, -1.7989466721743515e-14, -6.3061945000135234e-9, 3.1624176287745679e-9,
     -7.8409242536974293e-10, 5.1926791652540407e-15, 9.3589442423067836e-11, -4.5134262161632782e-11,
     1.0799129993116827e-11, -3.661886712685252e-17, -1.210902069055155e-12, 5.6807435849905643e-13,
     -1.3249659916340829e-13],
    [5.3130793646399222e-4, -5.9216643735369388e-4, 2.7087820967180448e-4, 7.9023532326603279e-7,
     -8.1539693675619688e-5, 5.6116827531062497e-5, -1.8329116582843376e-5, -3.0796134506033048e-9,
     3.4651553688036091e-6, -2.0291327396058604e-6, 5.7887928631490037e-7, 2.338630673826657e-13,
     -8.8286007463304835e-8, 4.7435958880408128e-8, -1.2545415020710382e-8, 8.6496488580102925e-14,
     1.6846058979264063e-9, -8.5754928235775947e-10, 2.1598224929232125e-10, -7.6132305204761539e-16,
     -2.6639822008536144e-11, 1.3065700536611057e-11, -3.1799163902367977e-12, 4.7109761213674315e-18,
     3.6902800842763467e-13],
    [3.4436760689237767e-4, 5.1717909082605922e-5, -3.3493161081142236e-4, 2.812695154763237e-4,
     -1.0976582244684731e-4, -1.2741009095484485e-7, 2.7744451511563644e-5, -1.8263488805711333e-5,
     5.7876949497350524e-6, 4.9387589339362704e-10, -1.0595367014026043e-6, 6.1667143761104075e-7,
     -1.7562973359060462e-7, -1.2974473287015439e-12, 2.695423606288966e-8, -1.4578352908731271e-8,
     3.887645959386175e-9, -3.8810022510194121e-17, -5.3279941738772867e-10, 2.7437977643314845e-10,
     -6.9957960920705679e-11, 2.5899863874868481e-17, 8.8566890996696381e-12, -4.403168815871311e-12,
     1.0865561947091654e-12],
    [-6.5262391859530942e-4, 8.3949872067208728e-4, -4.3829709854172101e-4, -6.969091458420552e-7,
     1.6644846642067548e-4, -1.2783517679769219e-4, 4.6299532636913043e-5, 4.5579098679227077e-9,
     -1.0595271125805195e-5, 6.7833429048651666e-6, -2.1075476666258804e-6, -1.7213731432817145e-11,
     3.7735877416110979e-7, -2.1867506700122867e-7, 6.2202288040189269e-8, 6.5977038267330006e-16,
     -9.5903864974256858e-9, 5.2132144922808078e-9, -1.3991589583935709e-9, 5.382058999060575e-16,
     1.9484714275467745e-10, -1.0127287556389682e-10, 2.6077347197254926e-11, -5.0904186999932993e-18,
     -3.3721464474854592e-12],
    [-5.9676129019274625e-4, -7.2048954160200106e-5, 6.7823088376673284e-4, -6.4014752602627585e-4,
     2.7750107634328704e-4, 1.8197008380465151e-7, -8.4795071170685032e-5, 6.105192082501531e-5,
     -2.1073920183404862e-5, -8.8585890141255994e-10, 4.5284535953805377e-6, -2.8427815022504408e-6,
     8.7082341778646412e-7, 3.6886101871706965e-12, -1.5344695190702061e-7, 8.862466778790695e-8,
     -2.5184812301826817e-8, -1.0225912098215092e-14, 3.8969470758154777e-9, -2.1267304792235635e-9,
     5.7370135528051385e-10, -1.887749850169741e-19, -8.0931538694657866e-11, 4.2382723283449199e-11,
     -1.1002224534207726e-11],
    [1.3324454494800656e-3, -1.9144384985654775e-3, 1.1089369134596637e-3, 9.932404122642299e-7,
     -5.0874501293093199e-4, 4.2735056665392884e-4, -1.6858853767910799e-4, -8.1301893922784998e-9,
     4.5284402370562147e-5, -3.127053674781734e-5, 1.044986828530338e-5, 4.8435226265680926e-11,
     -2.1482565873456258e-6, 1.329369701097492e-6, -4.0295693092101029e-7, -1.7567877666323291e-13,
     7.0145043163668257e-8, -4.040787734999483e-8, 1.1474026743371963e-8, 3.9642746853563325e-18,
     -1.7804938269892714e-9, 9.7480262548731646e-10, -2.6405338676507616e-10, 5.794875163403742e-18,
     3.7647749553543836e-11],
    [1.579727660730835e-3, 1.6251626278391582e-4, -2.0633421035543276e-3, 2.1389686185689098e-3,
     -1.0108559391263003e-3, -3.9912705529919201e-7, 3.6235025084764691e-4, -2.8143901463712154e-4,
     1.0449513336495887e-4, 2.1211418491830297e-9, -2.5779417251947842e-5, 1.7281818956040463e-5,
     -5.6413773872904282e-6, -1.1024320105776174e-11, 1.1223224418895175e-6, -6.8693396379526735e-7,
     2.0653236975414887e-7, 4.6714772409838506e-14, -3.5609886164949055e-8, 2.0470855345905963e-8,
     -5.8091738633283358e-9, -1.332821287582869e-16, 9.0354604391335133e-10, -4.9598782517330834e-10,
     1.3481607129399749e-10],
    [-4.0725121195140166e-3, 6.4033628338080698e-3, -4.0410161081676618e-3, -2.183732802866233e-6,
     2.1740441801254639e-3, -1.9700440518418892e-3, 8.3595469747962458e-4, 1.9445447567109655e-8,
     -2.5779387120421696e-4, 1.9009987368139304e-4, -6.7696499937438965e-5, -1.4440629666426572e-10,
     1.5712512518742269e-5, -1.0304008744776893e-5, 3.304517767401387e-6, 7.9829760242325709e-13,
     -6.4097794149313004e-7, 3.8894624761300056e-7, -1.1618347644948869e-7, -2.816808630596451e-15,
     1.9878012911297093e-8, -1.1407719956357511e-8, 3.2355857064185555e-9, 4.1759468293455945e-20,
     -5.0423112718105824e-10],
    [-5.9475779383993003e-3, -5.4016476789260452e-4, 8.7910413550767898e-3, -9.8576315587856125e-3,
     5.0134695031021538e-3, 1.2807521786221875e-6, -2.0626019342754683e-3, 1.7109128573523058e-3,
     -6.7695312714133799e-4, -6.9011545676562133e-9, 1.8855128143995902e-4, -1.3395215663491969e-4,
     4.6263183033528039e-5, 4.0034230613321351e-11, -1.0255652921494033e-5, 6.612086372797651e-6,
     -2.0913022027253008e-6, -2.0951775649603837e-13, 3.9756029041993247e-7, -2.3956211978815887e-7,
     7.1182883382145864e-8, 8.925574873053455e-16, -1.2101547235064676e-8, 6.9350618248334386e-9,
     -1.9661464453856102e-9],
    [1.7402027787522711e-2, -2.9527880945699121e-2, 2.0045875571402799e-2, 7.0289515966903407e-6,
     -1.2375421071343148e-2, 1.1976293444235254e-2, -5.4156038466518525e-3, -6.3290893396418616e-8,
     1.8855118129005065e-3, -1.473473274825001e-3, 5.5515810097708387e-4, 5.2406834412550662e-10,
     -1.4357913535784836e-4, 9.9181293224943297e-5, -3.3460834749478311e-5, -3.5755837291098993e-12,
     7.1560851960630076e-6, -4.5516802628155526e-6, 1.4236576649271475e-6, 1.8803149082089664e-14,
     -2.6623403898929211e-7, 1.5950642189595716e-7, -4.7187514673841102e-8, -6.5107872958755177e-17,
     7.9795091026746235e-9],
    [3.0249124160905891e-2, 2.4817436002649977e-3, -4.9939134373457022e-2, 5.9915643009307869e-2,
     -3.2483207601623391e-2, -5.7212968652103441e-6, 1.5085251778569354e-2, -1.3261324005088445e-2,
     5.5515262632426148e-3, 3.0263182257030016e-8, -1.7229548406756723e-3, 1.2893570099929637e-3,
     -4.6845138348319876e-4, -1.830259937893045e-10, 1.1449739014822654e-4, -7.7378565221244477e-5,
     2.5625836246985201e-5, 1.0766165333192814e-12, -5.3246809282422621e-6, 3.349634863064464e-6,
     -1.0381253128684018e-6, -5.608909920621128e-15, 1.9150821930676591e-7, -1.1418365800203486e-7,
     3.3654425209171788e-8],
    [-9.9051020880159045e-2, 1.7954011706123486e-1, -1.2989606383463778e-1, -3.1478872752284357e-5,
     9.0510635276848131e-2, -9.2828824411184397e-2, 4.4412112839877808e-2, 2.7779236316835888e-7,
     -1.7229543805449697e-2, 1.4182925050891573e-2, -5.6214161633747336e-3, -2.39598509186381e-9,
     1.6029634366079908e-3, -1.1606784674435773e-3, 4.1001337768153873e-4, 1.8365800754090661e-11,
     -9.5844256563655903e-5, 6.3643062337764708e-5, -2.076250624489065e-5, -1.1806020912804483e-13,
     4.2131808239120649e-6, -2.6262241337012467e-6, 8.0770620494930662e-7, 6.0125912123632725e-16,
     -1.4729737374018841e-7],
    [-1.9994542198219728e-1, -1.5056113040026424e-2, 3.6470239469348489e-1, -4.6435192311733545e-1,
     2.6640934719197893e-1, 3.4038266027147191e-5, -1.3784338709329624e-1, 1.276467178337056e-1,
     -5.6213828755200985e-2, -1.753150885483011e-7, 1.9235592956768113e-2, -1.5088821281095315e-2,
     5.7401854451350123e-3, 1.0622382710310225e-9, -1.5335082692563998e-3, 1.0819320643228214e-3,
     -3.7372510193945659e-4, -6.6170909729031985e-12, 8.4263617380909628e-5, -5.5150706827483479e-5,
     1.7769536448348069e-5, 3.8827923210205533e-14, -3.53513697488768e-6, 2.1865832130045269e-6,
     -6.6812849447625594e-7],
    [7.2438608504029431e-1, -1.3918010932653375, 1.0654143352413968, 1.876173868950258e-4,
     -8.2705501176152696e-1, 8.9352433347828414e-1, -4.4971003995291339e-1, -1.6107401567546652e-6,
     1.9235590165271091e-1, -1.6597702160042609e-1, 6.8882222681814333e-2, 1.3910091724608687e-8,
     -2.146911561508663e-2, 1.6228980898865892e-2, -5.9796016172584256e-3, -1.1287469112826745e-10,
     1.5167451119784857e-3, -1.0478634293553899e-3, 3.5539072889126421e-4, 8.1704322111801517e-13,
     -7.7773013442452395e-5, 5.0291413897007722e-5, -1.6035083867000518e-5, 1.2469354315487605e-14,
     3.1369106244517615e-6],
    [1.6668949727276811, 1.165462765994632e-1, -3.3288393225018906, 4.4692325482864037,
     -2.6977693045875807, -2.600667859891061e-4, 1.5389017615694539, -1.4937962361134612,
     6.8881964633233148e-1, 1.3077482004552385e-6, -2.5762963325596288e-1, 2.1097676102125449e-1,
     -8.3714408359219882e-2, -7.7920428881354753e-9, 2.4267923064833599e-2, -1.7813678334552311e-2,
     6.3970330388900056e-3, 4.9430807090480523e-11, -1.5554602758465635e-3, 1.0561196919903214e-3,
     -3.5277184460472902e-4, 9.3002334645022459e-14, 7.5285855026557172e-5, -4.8186515569156351e-5,
     1.5227271505597605e-5],
    [-6.6188298861372935, 1.3397985455142589e+1, -1.0789350606845146e+1, -1.4352254537875018e-3,
     9.2333694596189809, -1.0456552819547769e+1, 5.5105526029033471, 1.2024439690716742e-5,
     -2.5762961164755816, 2.3207442745387179, -1.0045728797216284, -1.0207833290021914e-7,
     3.3975092171169466e-1, -2.6720517450757468e-1, 1.0235252851562706e-1, 8.4329730484871625e-10,
     -2.7998284958442595e-2, 2.0066274144976813e-2, -7.0554368915086242e-3, 1.9402238183698188e-12,
     1.6562888105449611e-3, -1.1082898580743683e-3, 3.654545161310169e-4, -5.1290032026971794e-11,
     -7.6340103696869031e-5],
    [-1.7112706061976095e+1, -1.1208044642899116, 3.7131966511885444e+1, -5.2298271025348962e+1,
     3.3058589696624618e+1, 2.4791298976200222e-3, -2.061089403411526e+1, 2.088672775145582e+1,
     -1.0045703956517752e+1, -1.2238783449063012e-5, 4.0770134274221141, -3.473667358470195,
     1.4329352617312006, 7.1359914411879712e-8, -4.4797257159115612e-1, 3.4112666080644461e-1,
     -1.2699786326594923e-1, -2.8953677269081528e-10, 3.3125776278259863e-2, -2.3274087021036101e-2,
     8.0399993503648882e-3, -1.177805216235265e-9, -1.8321624891071668e-3, 1.2108282933588665e-3,
     -3.9479941246822517e-4],
    [7.389033153567425e+1, -1.5680141270402273e+2, 1.322177542759164e+2, 1.3692876877324546e-2,
     -1.2366496885920151e+2, 1.4620689391062729e+2, -8.0365587724865346e+1, -1.1259851148881298e-4,
     4.0770132196179938e+1, -3.8210340013273034e+1, 1.719522294277362e+1, 9.3519707955168356e-7,
     -6.2716159907747034, 5.1168999071852637, -2.0319658112299095, -4.9507215582761543e-9,
     5.9626397294332597e-1, -4.4220765337238094e-1, 1.6079998700166273e-1, -2.4733786203223402e-8,
     -4.0307574759979762e-2, 2.7849050747097869e-2, -9.4751858992054221e-3, 6.419922235909132e-6,
     2.1250180774699461e-3],
    [2.1216837098382522e+2, 1.3107863022633868e+1, -4.9698285932871748e+2, 7.3121595266969204e+2,
     -4.8213821720890847e+2, -2.8817248692894889e-2, 3.2616720302947102e+2, -3.4389340280087117e+2,
     1.7195193870816232e+2, 1.4038077378096158e-4, -7.52594195897599e+1, 6.651969984520934e+1,
     -2.8447519748152462e+1, -7.613702615875391e-7, 9.5402237105304373, -7.5175301113311376,
     2.8943997568871961, -4.6612194999538201e-7, -8.0615149598794088e-1, 5.8483006570631029e-1,
     -2.0845408972964956e-1, 1.4765818959305817e-4, 5.1000433863753019e-2, -3.3066252141883665e-2,
     1.5109265210467774e-2],
    [-9.8959643098322368e+2, 2.1925555360905233e+3, -1.9283586782723356e+3, -1.5925738122215253e-1,
     1.9569985945919857e+3, -2.4072514765081556e+3, 1.3756149959336496e+3, 1.2920735237496668e-3,
     -7.525941715948055e+2, 7.3171668742208716e+2, -3.4137023466220065e+2, -9.9857390260608043e-6,
     1.3356313181291573e+2, -1.1276295161252794e+2, 4.6310396098204458e+1, -7.9237387133614756e-6,
     -1.4510726927018646e+1, 1.1111771248100563e+1, -4.1690817945270892, 3.1008219800117808e-3,
     1.1220095449981468, -7.6052379926149916e-1, 3.6262236505085254e-1, 2.216867741940747e-1,
     4.8683443692930507e-1]])


def _temme_sum(eta, a, machep):
    """sum over k of C_k(eta) a^-k, each C_k(eta) summed over eta's powers until a term is below MACHEP of it, the
    outer sum until its terms grow (an asymptotic series) or fall below MACHEP of the sum."""
    real = a.dtype.type
    table = _TEMME.astype(real)
    powers = [np.ones_like(eta)]
    for _ in range(1, 25):
        powers.append(eta * powers[-1])
    total, afac = np.zeros_like(eta), np.ones_like(eta)
    old = np.full_like(eta, real(np.inf))
    going = np.ones(eta.shape, bool)
    for k in range(25):
        ck = np.full_like(eta, table[k, 0])
        summing = going.copy()
        for n in range(1, 25):
            ckterm = table[k, n] * powers[n]
            ck = np.where(summing, ck + ckterm, ck)
            summing &= ~(np.abs(ckterm) < machep * np.abs(ck))
        term = ck * afac
        absterm = np.abs(term)
        going &= ~(absterm > old)
        total = np.where(going, total + term, total)
        going &= ~(absterm < machep * np.abs(total))
        old = np.where(going, absterm, old)
        afac = np.where(going, afac / a, afac)
    return total


def _asymptotic(a, x, lower):
    """``_igam_helper_asymptotic_series``: P (``lower``) or Q for a ~ x by Temme's expansion, erfc(-+eta sqrt(a/2))
    / 2 -+ e^(-a eta^2 / 2) / sqrt(2 pi a) sum C_k(eta) a^-k, with eta^2 / 2 = sigma - log1p(sigma), sigma = (x - a)
    / a (the float kernel's halving and last sum in double, its pi c10's float pi, as ATen writes them)."""
    real = a.dtype.type
    machep = _machine(real)[0]
    sign = real(-1) if lower else real(1)
    with np.errstate(all="ignore"):
        ratio = x / a
        sigma = (x - a) / a
        root = np.sqrt(real(-2) * (libm("log1p", sigma) - sigma))
        eta = np.where(ratio > 1, root, np.where(ratio < 1, -root, real(0)))
        res = _in_double(0.5 * libm("erfc", sign * eta * np.sqrt(a / real(2))).astype(_F64), real)
        total = _temme_sum(eta, a, machep)
        wide = [v.astype(_F64) for v in (a, eta, total)]
        gaussian = libm("exp", -0.5 * wide[0] * wide[1] * wide[1])
        root_2pi_a = np.sqrt(np.float32(2 * np.float32(math.pi)).astype(real) * a).astype(_F64)
        return _in_double(res.astype(_F64) + float(sign) * gaussian * wide[2] / root_2pi_a, real)


# ---- calc_igamma / calc_igammac --------------------------------------------------------------------------------
def _edges(a, x, lower):
    """The boundary values (P's; Q's are 1 minus), in ATen's order of tests, and where they apply."""
    real = a.dtype.type
    one, zero, nan = real(1), real(0), real(np.nan)
    fill = lambda p: p if lower else one - p  # noqa: E731
    conditions = [(x < 0) | (a < 0), (a == 0) & (x > 0), a == 0, x == 0, np.isinf(a) & np.isinf(x), np.isinf(a),
                  np.isinf(x)]
    values = [nan, fill(one), nan, fill(zero), nan, fill(zero), fill(one)]
    found = np.zeros(a.shape, bool)
    out = np.zeros_like(a)
    for condition, value in zip(conditions, values):
        new = condition & ~found
        out[new] = value
        found |= new
    return found, out


def _temme_applies(a, x):
    """a > 20 with |x - a| / a < 0.3, or a > 200 with it below 4.5 / sqrt(a): the asymptotic regime."""
    real = a.dtype.type
    with np.errstate(all="ignore"):
        distance = np.abs(x - a) / a
        return ((a > real(_SMALL)) & (a < real(_LARGE)) & (distance < real(_SMALLRATIO))) | \
            ((a > real(_LARGE)) & (distance < real(_LARGERATIO) / np.sqrt(a)))


def _on(mask, function, a, x, out):
    """``out[mask] = function(a[mask], x[mask])``, skipped where nothing takes that route."""
    if mask.any():
        out[mask] = function(a[mask], x[mask])


def igamma_as_torch(a, x, lower=True, sixteen_bit=False):
    """torch's ``calc_igamma`` (``lower``) or ``calc_igammac`` of float32/float64 arrays of one dtype, broadcast,
    in that dtype, in C order; a nan argument that reaches the series gives nan, as its loop would after 2,000
    rounds.

    Which multiply-adds are fused depends on where torch's loop calls the function. calc_igammac is inlined into
    its kernel's loops, compiled for the FMA build, and so is calc_igamma into igamma's vectorized lambda
    (``Vectorized::igamma``, an element at a time) and into ``basic_loop`` (the loop of a strided layout); but the
    scalar tail of each row of the vectorized loop calls calc_igamma out of line, and so does calc_igamma where P
    is 1 - Q: an inline function compiled into several of ATen's files is one symbol, and the copy the linker kept
    is one built without FMA (measured on an AMD EPYC with torch 2.13's AVX-512 build: every step of it rounded
    twice; another build's linker may keep another copy). ``sixteen_bit``: float32 arrays of a
    float16 or bfloat16 op, whose calc_igamma (the 16-bit one, calling the float one) is out of line everywhere."""
    a, x = np.broadcast_arrays(a, x)
    out_of_line = np.zeros(a.size, bool)
    if not float32_math.FUSED_MULTIPLY_ADD or lower and sixteen_bit:
        out_of_line[:] = True
    elif lower:
        for where in _vectorized_tails(a, x):
            out_of_line[where] = True
    flat_a, flat_x = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat_a.shape, a.dtype)
    for chosen, inlined in ((~out_of_line, True), (out_of_line, False)):
        if chosen.any():
            out[chosen] = _calc_igamma(flat_a[chosen], flat_x[chosen], lower, inlined)
    return out.reshape(a.shape)


def _vectorized_tails(a, x):
    """The elements of igamma's vectorized loop its scalar lambda takes (each row's last ``len % step``:
    ``float32_math.scalar_positions``; a double vector holds half a float one's lanes), none where the layout
    sends the whole loop to ``basic_loop`` (the positions that stay scalar with a step of 1)."""
    whole = float32_math.scalar_positions(a, x, step=1)
    if any(np.arange(a.size)[where].size for where in whole):
        return []
    lanes = float32_math.FLOAT_LANES
    return float32_math.scalar_positions(a, x, step=lanes if a.dtype == np.float64 else 2 * lanes)


def _calc_igamma(a, x, lower, inlined):
    """calc_igamma / calc_igammac of flat arrays: the edges, then each route on the elements that take it
    (``inlined``: the copy compiled with FMA, whose own steps are fused)."""
    real = a.dtype.type
    top = _fused if inlined else _unfused
    found, out = _edges(a, x, lower)
    left = ~found
    with np.errstate(invalid="ignore"):
        unknown = left & (np.isnan(a) | np.isnan(x))
    out[unknown] = real(np.nan)
    left &= ~unknown
    temme = left & _temme_applies(a, x)
    _on(temme, lambda a, x: _asymptotic(a, x, lower), a, x, out)
    left &= ~temme
    if lower:  # P: 1 - Q beyond max(1, a) (calc_igammac called out of line), else P's series
        complement = left & (x > 1) & (x > a)
        _on(complement, lambda a, x: real(1) - _upper_without_temme(a, x, _unfused), a, x, out)
        _on(left & ~complement, lambda a, x: _lower_series(a, x, top), a, x, out)
    else:
        _on(left, lambda a, x: _upper_without_temme(a, x, top), a, x, out)
    return out


def _upper_without_temme(a, x, fma):
    """``calc_igammac`` past its edges and asymptotic regime: the continued fraction for x > 1.1 above a, Q's
    series for small x where a is small (x <= 0.5: -0.4 / log(x) >= a; else 1.1 x >= a), else 1 - P's series."""
    real = a.dtype.type
    out = np.zeros_like(a)
    with np.errstate(all="ignore"):
        wide_x, wide_a = x.astype(_F64), a.astype(_F64)
        beyond = wide_x > 1.1
        fraction = beyond & (x >= a)
        near_zero = ~beyond & (x <= 0.5)
        small_a = np.where(near_zero, -0.4 / libm("log", x).astype(_F64) >= wide_a, wide_x * 1.1 >= wide_a)
        upper_series = ~beyond & small_a
    _on(fraction, lambda a, x: _upper_continued_fraction(a, x, fma), a, x, out)
    _on(upper_series, lambda a, x: _upper_series(a, x, fma), a, x, out)
    _on(~fraction & ~upper_series, lambda a, x: real(1) - _lower_series(a, x, fma), a, x, out)
    return out


# ---- the ops: torch.igamma / igammac, special.gammainc / gammaincc, x.igamma(other) ------------------------------
@computes_in_float32
class Igamma(Function):
    """P(a, x) (``lower``) or Q(a, x); torch's derivative for x only (derivatives.yaml):
    +-grad * exp((a - 1) log(x) - x - lgamma(a)), each step one tensor op; none for a."""

    @staticmethod
    def forward(ctx, a, x, lower, sixteen_bit):
        ctx.a, ctx.x, ctx.lower, ctx.shapes = a, x, lower, (a.shape, x.shape)
        values = igamma_as_torch(_host_array(a), _host_array(x), lower, sixteen_bit)
        return xp_of(a).asarray(values)

    @staticmethod
    def backward(ctx, g):
        if ctx.needs_input_grad[0]:
            name = "igamma" if ctx.lower else "igammac"
            raise NotImplementedError(f"the derivative for '{name}: input' is not implemented.")
        a, x = (_host_array(v) for v in (ctx.a, ctx.x))
        real = x.dtype.type
        with np.errstate(all="ignore"):
            exponent = _step(ctx, _step(ctx, a - real(1)) * _step(ctx, float32_math.vml("log", x)))
            exponent = _step(ctx, _step(ctx, exponent - x) - _step(ctx, torch_lgamma(a)))
            density = _step(ctx, torch_exp(exponent))
        scale = g if ctx.lower else _step(ctx, -g)
        return None, unbroadcast(scale * xp_of(g).asarray(density), ctx.shapes[1]), None, None


Igamma.torch_layout = "elementwise"


def tensors_only(name, *arguments, first_position=1):
    """torch's argument parser: each (parameter, value) of ``arguments`` must be a Tensor (no number, no list)."""
    for position, (parameter, value) in enumerate(arguments, start=first_position):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}(): argument '{parameter}' (position {position}) must be Tensor, not "
                            f"{type(value).__name__}")


def _operands(name, input, other):
    """input and other promoted to torch's result dtype, which must be floating (igamma has no integer, bool or
    complex kernel: an integer pair is refused, an integer beside a float promotes)."""
    tensors_only(name, ("input", input), ("other", other))
    no_forward_formula(name, input, other)  # (torch has none for either argument)
    a, x = _promoted(input, other)
    dtype = a.dtype
    if dtype.kind == "c" or not dtypes.is_floating(dtype):
        raise NotImplementedError(f"\"{name}_cpu\" not implemented for '{dtypes.torch_name(dtype)}'")
    return a, x


def igamma(input, other):
    """``torch.igamma(a, x)`` / ``special.gammainc``: the regularized lower incomplete gamma function P(a, x)."""
    a, x = _operands("igamma", input, other)
    sixteen_bit = a.dtype.itemsize == 2
    return name_node(Igamma.apply(a, x, True, sixteen_bit), "IgammaBackward0", input, other)


def igammac(input, other):
    """``torch.igammac(a, x)`` / ``special.gammaincc``: the regularized upper one, Q(a, x) = 1 - P(a, x)."""
    a, x = _operands("igammac", input, other)
    sixteen_bit = a.dtype.itemsize == 2
    return name_node(Igamma.apply(a, x, False, sixteen_bit), "IgammacBackward0", input, other)


def _method(function, in_place):
    """``x.igamma(other)`` / ``x.igamma_(other)`` (other a Tensor: position 1 of the method)."""
    name = function.__name__ + ("_" if in_place else "")

    def method(self, other):
        tensors_only(name, ("other", other))
        no_forward_formula(name, self, other)
        return self._inplace(function, other) if in_place else function(self, other)
    method.__name__ = name
    return method


for _fn in (igamma, igammac):
    setattr(Tensor, _fn.__name__, _method(_fn, False))
    setattr(Tensor, _fn.__name__ + "_", _method(_fn, True))
