// Stand-in for Thrust's <thrust/complex.h> under minilora's CPU emulator: thrust::complex<T> (what CuPy's
// <cupy/complex.cuh> is too).  Its arithmetic is thrust's: products by the schoolbook formula, quotients scaled by
// |re| + |im| of the divisor (no C99 Annex G infinities); mixed operands promote as thrust's do (complex<float> *
// double is a complex<double>).  The transcendental functions go through the host's std::complex (accurate to a
// few ulps, as thrust's own).  A kernel taking thrust::complex<float>* accepts a NumPy complex64 array, and a
// thrust::complex<float> parameter an np.complex64 (complex<double>: complex128).
#pragma once
#include "../cuda/std/__emu_open.h"
#include <cmath>
#include <complex>
#include <type_traits>
#include "../cuda/std/__emu_close.h"

namespace thrust {
template <typename T>
struct alignas(2 * sizeof(T)) complex {
    typedef T value_type;
    T re_, im_;

    complex(const T& re = T(), const T& im = T()) : re_(re), im_(im) {}
    template <typename U>
    complex(const complex<U>& z) : re_(T(z.real())), im_(T(z.imag())) {}
    template <typename U>
    complex(const std::complex<U>& z) : re_(T(z.real())), im_(T(z.imag())) {}
    operator std::complex<T>() const { return std::complex<T>(re_, im_); }

    T real() const volatile { return re_; }
    T imag() const volatile { return im_; }
    T real() const { return re_; }
    T imag() const { return im_; }
    void real(T re) { re_ = re; }
    void imag(T im) { im_ = im; }

    complex& operator=(const T& re) { re_ = re; im_ = T(); return *this; }
    template <typename U> complex& operator+=(const complex<U>& z) { return *this = *this + z; }
    template <typename U> complex& operator-=(const complex<U>& z) { return *this = *this - z; }
    template <typename U> complex& operator*=(const complex<U>& z) { return *this = *this * z; }
    template <typename U> complex& operator/=(const complex<U>& z) { return *this = *this / z; }
    template <typename U> complex& operator+=(const U& x) { return *this = *this + x; }
    template <typename U> complex& operator-=(const U& x) { return *this = *this - x; }
    template <typename U> complex& operator*=(const U& x) { return *this = *this * x; }
    template <typename U> complex& operator/=(const U& x) { return *this = *this / x; }
};

namespace __emu_complex {
template <typename A, typename B> using promoted = complex<decltype(A() + B())>;
template <typename T> struct is_complex : std::false_type {};
template <typename T> struct is_complex<complex<T>> : std::true_type {};
template <typename T> using if_real = std::enable_if_t<std::is_arithmetic<T>::value, int>;
template <typename T> std::complex<T> wide(const complex<T>& z) { return std::complex<T>(z.real(), z.imag()); }
}  // namespace __emu_complex

template <typename A, typename B>
__emu_complex::promoted<A, B> operator+(const complex<A>& x, const complex<B>& y) {
    return {x.real() + y.real(), x.imag() + y.imag()};
}
template <typename A, typename B>
__emu_complex::promoted<A, B> operator-(const complex<A>& x, const complex<B>& y) {
    return {x.real() - y.real(), x.imag() - y.imag()};
}
template <typename A, typename B>
__emu_complex::promoted<A, B> operator*(const complex<A>& x, const complex<B>& y) {
    return {x.real() * y.real() - x.imag() * y.imag(), x.real() * y.imag() + x.imag() * y.real()};
}
// thrust's division: both operands scaled by s = |Re y| + |Im y| first, so that |y|^2 neither overflows nor
// underflows where the quotient itself is representable
template <typename A, typename B>
__emu_complex::promoted<A, B> operator/(const complex<A>& x, const complex<B>& y) {
    typedef decltype(A() + B()) T;
    T s = std::abs(T(y.real())) + std::abs(T(y.imag()));
    T oos = T(1.0) / s;
    const T ars = x.real() * oos, ais = x.imag() * oos, brs = y.real() * oos, bis = y.imag() * oos;
    s = (brs * brs) + (bis * bis);
    oos = T(1.0) / s;
    return {((ars * brs) + (ais * bis)) * oos, ((ais * brs) - (ars * bis)) * oos};
}
// With a real operand: the real is a complex with imaginary part 0, except that * and / scale both parts
template <typename A, typename B, __emu_complex::if_real<B> = 0>
__emu_complex::promoted<A, B> operator+(const complex<A>& x, const B& y) { return {x.real() + y, x.imag()}; }
template <typename A, typename B, __emu_complex::if_real<A> = 0>
__emu_complex::promoted<A, B> operator+(const A& x, const complex<B>& y) { return {x + y.real(), y.imag()}; }
template <typename A, typename B, __emu_complex::if_real<B> = 0>
__emu_complex::promoted<A, B> operator-(const complex<A>& x, const B& y) { return {x.real() - y, x.imag()}; }
template <typename A, typename B, __emu_complex::if_real<A> = 0>
__emu_complex::promoted<A, B> operator-(const A& x, const complex<B>& y) { return {x - y.real(), -y.imag()}; }
template <typename A, typename B, __emu_complex::if_real<B> = 0>
__emu_complex::promoted<A, B> operator*(const complex<A>& x, const B& y) { return {x.real() * y, x.imag() * y}; }
template <typename A, typename B, __emu_complex::if_real<A> = 0>
__emu_complex::promoted<A, B> operator*(const A& x, const complex<B>& y) { return {x * y.real(), x * y.imag()}; }
template <typename A, typename B, __emu_complex::if_real<B> = 0>
__emu_complex::promoted<A, B> operator/(const complex<A>& x, const B& y) { return {x.real() / y, x.imag() / y}; }
template <typename A, typename B, __emu_complex::if_real<A> = 0>
__emu_complex::promoted<A, B> operator/(const A& x, const complex<B>& y) { return complex<A>(x) / y; }

template <typename T> complex<T> operator+(const complex<T>& z) { return z; }
template <typename T> complex<T> operator-(const complex<T>& z) { return {-z.real(), -z.imag()}; }
template <typename A, typename B> bool operator==(const complex<A>& x, const complex<B>& y) {
    return x.real() == y.real() && x.imag() == y.imag();
}
template <typename A, typename B> bool operator!=(const complex<A>& x, const complex<B>& y) { return !(x == y); }
template <typename A, typename B, __emu_complex::if_real<B> = 0>
bool operator==(const complex<A>& x, const B& y) { return x.real() == y && x.imag() == A(); }
template <typename A, typename B, __emu_complex::if_real<A> = 0>
bool operator==(const A& x, const complex<B>& y) { return y == x; }
template <typename A, typename B, __emu_complex::if_real<B> = 0>
bool operator!=(const complex<A>& x, const B& y) { return !(x == y); }
template <typename A, typename B, __emu_complex::if_real<A> = 0>
bool operator!=(const A& x, const complex<B>& y) { return !(y == x); }

template <typename T> T real(const complex<T>& z) { return z.real(); }
template <typename T> T imag(const complex<T>& z) { return z.imag(); }
template <typename T> T abs(const complex<T>& z) { return std::hypot(z.real(), z.imag()); }
template <typename T> T arg(const complex<T>& z) { return std::atan2(z.imag(), z.real()); }
template <typename T> T norm(const complex<T>& z) { return z.real() * z.real() + z.imag() * z.imag(); }
template <typename T> complex<T> conj(const complex<T>& z) { return {z.real(), -z.imag()}; }
template <typename T> complex<T> polar(const T& m, const T& theta = T()) { return std::polar(m, theta); }
template <typename T> complex<T> proj(const complex<T>& z) { return std::proj(__emu_complex::wide(z)); }

#define __EMU_COMPLEX_FUNCTION(NAME) \
    template <typename T> complex<T> NAME(const complex<T>& z) { return std::NAME(__emu_complex::wide(z)); }
__EMU_COMPLEX_FUNCTION(exp) __EMU_COMPLEX_FUNCTION(log) __EMU_COMPLEX_FUNCTION(log10) __EMU_COMPLEX_FUNCTION(sqrt)
__EMU_COMPLEX_FUNCTION(sin) __EMU_COMPLEX_FUNCTION(cos) __EMU_COMPLEX_FUNCTION(tan) __EMU_COMPLEX_FUNCTION(sinh)
__EMU_COMPLEX_FUNCTION(cosh) __EMU_COMPLEX_FUNCTION(tanh) __EMU_COMPLEX_FUNCTION(asin) __EMU_COMPLEX_FUNCTION(acos)
__EMU_COMPLEX_FUNCTION(atan) __EMU_COMPLEX_FUNCTION(asinh) __EMU_COMPLEX_FUNCTION(acosh) __EMU_COMPLEX_FUNCTION(atanh)
#undef __EMU_COMPLEX_FUNCTION

template <typename A, typename B>
__emu_complex::promoted<A, B> pow(const complex<A>& x, const complex<B>& y) {
    typedef decltype(A() + B()) T;
    return std::pow(__emu_complex::wide(complex<T>(x)), __emu_complex::wide(complex<T>(y)));
}
template <typename A, typename B, __emu_complex::if_real<B> = 0>
__emu_complex::promoted<A, B> pow(const complex<A>& x, const B& y) { return pow(x, complex<B>(y)); }
template <typename A, typename B, __emu_complex::if_real<A> = 0>
__emu_complex::promoted<A, B> pow(const A& x, const complex<B>& y) { return pow(complex<A>(x), y); }
}  // namespace thrust

// A complex<float>* argument is an array of float pairs to the launcher (a complex64 array), as float2* is
namespace __emu {
template <typename T> struct elem_of<thrust::complex<T>> { using type = T; static constexpr int lanes = 2; };
}  // namespace __emu
