// expect: K must be at least 1
#include <moe/moe.hpp>
moe::TopK<0> nothing;
int main() {}
